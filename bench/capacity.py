"""Capacity plans judged minute by minute: ``python -m bench.run capacity`` →
``bench/results/capacity.json`` (the same run as ``feedcast capacity plan --folds 3``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from prefetch import capacity as cp
from simulator.traffic import VARIANTS

RESULTS = Path(__file__).resolve().parent / "results"


def run(_settings: object = None) -> dict[str, Any]:
    cfg = cp.CapacityConfig()
    out: dict[str, Any] = {}
    for v in VARIANTS:
        r = cp.evaluate(v, folds=3, cfg=cfg, progress=lambda m: print(m, flush=True))
        cp.plot(r, RESULTS / f"capacity_{v}.png", cfg)
        plan = r.pop("last")["plan"]
        (RESULTS / f"capacity_{v}_schedule.yaml").write_text(yaml.safe_dump(plan.to_dict()))
        r["days_until_full_p95"] = plan.days_until_full
        out[v] = r
    return {**cp.worst(out), "variants": out}
