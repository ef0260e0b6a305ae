"""Point-in-time join: ours (pandas as-of over the registry's views) vs Feast's file store.

Both run on the same rows of the same world in one process; peak memory is measured in a
child process per engine so that one does not hide the other.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from core.settings import Settings

ROWS = (5_000, 20_000, 50_000)

_CHILD = """
import json, resource, sys, time
import pandas as pd
from core.settings import Settings
from training.dataset import point_in_time
s = Settings.model_validate_json(sys.argv[1])
rows = pd.read_parquet(s.world_dir / "impressions.parquet").sample(int(sys.argv[2]), random_state=0)
t0 = time.perf_counter()
out = point_in_time(s, rows, engine=sys.argv[3])
print(json.dumps({"s": time.perf_counter() - t0, "rows": len(out),
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _one(settings: Settings, n: int, engine: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, settings.model_dump_json(), str(n), engine],
        capture_output=True,
        text=True,
        timeout=1800,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(settings: Settings) -> dict[str, Any]:
    if not (settings.world_dir / "impressions.parquet").exists():
        raise RuntimeError(f"no world under {settings.world_dir}: run `make demo` first")
    out: dict[str, Any] = {}
    for n in ROWS:
        ours, feast = _one(settings, n, "pandas"), _one(settings, n, "feast")
        out[str(n)] = {
            "ours": ours,
            "feast": feast,
            "time_ratio_feast_over_ours": feast["s"] / ours["s"],
            "rss_ratio_feast_over_ours": feast["rss_mb"] / ours["rss_mb"],
        }
    out["note"] = "each engine in its own process; rss is that process's peak"
    return out
