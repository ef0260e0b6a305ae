"""The feed under open-loop load, beside Ray Serve's own floor, in one run.

What it does:
1. Builds a world of its own (keyspace ``feedcast_bench``, Feast project ``bench``) where a
   reader's sources give about 500 candidates: many follows, busy authors, a few big accounts
   pulled at read time. Trains both rankers on it (few epochs: latency, not quality, is measured
   here) and registers them as ``@champion`` under bench-only model names.
2. Feature reads, Feast's ``get_online_features`` vs our reader, on the same 500 rows.
3. Deploys the feed and the no-op app (``serving.noop.build_noop_app``) side by side on one Ray
   Serve instance, then drives each with locust, headless, in a process of its own, at 50, 100
   and 200 requests/s (noop then feed at each rate, so both see the same machine).
4. Sessions (``bench/sessions.py``): machine CPU per continued page against ``/v1/ping`` (the
   same gate and guard), and capacity with first pages only against a session mix.

Writes ``feature_read_speedup_500``, ``feed_p50_ms`` / ``feed_p99_ms`` / ``feed_error_rate`` and
``noop_p50_ms`` per rate, and ``feed_vs_noop_p50_ratio`` (at 50 rps). Absolute times on a
2-core machine that also runs Cassandra, Redis, MLflow and the load generator are indicative
only: read the ratios.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from core import constants as C
from core.settings import DEV_API_KEY, Settings

RATES = (50, 100, 200)
DURATION_S = 30
USER_RPS = 2.0  # one simulated client asks every 0.5 s: idle most of the time (open loop)
LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
BENCH_PORT = 8021


def bench_settings(base: Settings) -> Settings:
    return base.model_copy(
        update={
            "cassandra_keyspace": "feedcast_bench",
            "feast_project": "bench",
            "model_name": "feed_ranker_bench",
            "heavy_model_name": "feed_ranker_heavy_bench",
            "experiment": "feedcast-bench",
            "data_dir": base.home / "bench-serve",
            "serve_port": BENCH_PORT,
            # Bench-sized world: ~10 authors above this are pulled at read time.
            "pull_follower_threshold": 600,
            # The load generator is one key; the limit is not what is measured here.
            "rate_limit_per_s": 100_000.0,
            "rate_limit_burst": 100_000,
            # Both replicas from the start: the runs measure capacity, not the autoscaler's
            # ramp (30 s runs are about as long as its upscale reaction).
            "serve_min_replicas": 2,
            "serve_max_replicas": 2,
        }
    )


def _world(s: Settings) -> list[int]:
    """Generate, materialize and train the bench world (reused within the hour it was built
    for: its ``end`` is that hour); return the readers to ask for."""
    from pipelines.steps import features_apply, features_materialize, generate_world, train
    from simulator.config import WorldConfig
    from training.heavy import HeavyParams

    config = WorldConfig(users=800, days=3, seed=0, mean_follows=120, posts_per_author_day=2.5)
    manifest = s.world_dir / "manifest.json"
    done = s.world_dir / "bench-ready"
    if (
        done.exists()
        and manifest.exists()
        and json.loads(manifest.read_text())["config"] == json.loads(config.model_dump_json())
    ):
        print("bench world of this hour already built: reused", flush=True)
    else:
        done.unlink(missing_ok=True)
        generate_world(s, config, replace=True, progress=True)
        features_apply(s)
        features_materialize(s)
        train(s, heavy_params=HeavyParams(epochs=3), progress=True)
        done.touch()
    _settle(s)
    follows = pd.read_parquet(s.world_dir / "follows.parquet", columns=[C.USER_ID])
    readers = follows[C.USER_ID].value_counts()
    return [int(u) for u in readers.index[: len(readers) // 2]]  # the half that follows most


def _settle(s: Settings, busy_share: float = 0.15, limit_s: float = 180) -> None:
    """Wait until Cassandra is done compacting what the world just wrote (its CPU share over
    5 s below ``busy_share`` of one core), so that no run measures a compaction."""
    from stack import proc
    from stack.cassandra import NAME

    pid = proc.read_pid(s.stack_dir, NAME)
    if pid is None:  # not the stack's own node: nothing to watch
        return

    def ticks() -> int:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime

    hz = os.sysconf("SC_CLK_TCK")
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        before = ticks()
        time.sleep(5)
        share = (ticks() - before) / hz / 5
        print(f"cassandra busy {share:.0%} of a core", flush=True)
        if share < busy_share:
            return


def _locust(url: str, target: str, rate: int, users_file: Path, out: Path) -> dict[str, Any]:
    """One headless locust run at ``rate`` requests/s against ``target``; its figures."""
    clients = max(1, math.ceil(rate / USER_RPS))
    prefix = out / f"{target}_{rate}"
    detail = out / f"{target}_{rate}_detail.json"
    env = os.environ | {
        "BENCH_TARGET": target,
        "BENCH_USER_RPS": str(USER_RPS),
        "BENCH_USERS": str(users_file),
        "BENCH_API_KEY": DEV_API_KEY,
        "BENCH_DETAIL": str(detail),
    }
    argv = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        url,
        "--users",
        str(clients),
        "--spawn-rate",
        str(clients * USER_RPS),  # all clients within one period: their phases spread evenly
        "--run-time",
        f"{DURATION_S}s",
        "--reset-stats",  # count from the moment every client runs
        "--csv",
        str(prefix),
        "--only-summary",
        "--loglevel",
        "WARNING",
    ]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=DURATION_S + 60)
    stats = out / f"{target}_{rate}_stats.csv"
    if not stats.exists():
        raise RuntimeError(f"locust wrote no stats ({proc.returncode}): {proc.stderr[-800:]}")
    with stats.open() as f:
        row = next(r for r in csv.DictReader(f) if r["Name"] == target)
    n, failed = int(row["Request Count"]), int(row["Failure Count"])
    result: dict[str, Any] = {
        "offered_rps": rate,
        "achieved_rps": float(row["Requests/s"]),
        "requests": n,
        "p50_ms": float(row["50%"]),
        "p90_ms": float(row["90%"]),
        "p99_ms": float(row["99%"]),
        "error_rate": failed / n if n else 1.0,
    }
    if detail.exists():
        result |= json.loads(detail.read_text())
    return result


def run(settings: Settings) -> dict[str, Any]:
    import ray
    from ray import serve

    from bench import sessions
    from bench.features import feature_read_speedup
    from serving.deploy import deploy
    from serving.noop import build_noop_app

    s = bench_settings(settings)
    readers = _world(s)
    features = feature_read_speedup(s, n=500)
    url = deploy(s, address="local")
    out: dict[str, Any] = {"features": features}
    try:
        serve.run(build_noop_app(s), name="noop", route_prefix="/noop", blocking=False)
        httpx.get(f"{url}/noop/", timeout=30).raise_for_status()
        with tempfile.TemporaryDirectory() as tmp:
            users_file = Path(tmp) / "users.txt"
            users_file.write_text("\n".join(map(str, readers)))
            # Warm both (connections, JIT-free but cache-cold paths) before anything is measured.
            with httpx.Client(headers={"X-API-Key": DEV_API_KEY}, timeout=30) as c:
                for u in readers[:30]:
                    c.get(f"{url}/v1/feed/{u}")
                    c.get(f"{url}/noop/")
            for rate in RATES:
                for target in ("noop", "feed"):
                    r = _locust(url, target, rate, users_file, Path(tmp))
                    out[f"{target}_{rate}"] = r
                    print(
                        f"{target:>4} @ {rate:>3} rps: p50 {r['p50_ms']:.0f} ms, "
                        f"p99 {r['p99_ms']:.0f} ms, errors {r['error_rate']:.2%}, "
                        f"achieved {r['achieved_rps']:.0f} rps",
                        flush=True,
                    )
        out["sessions"] = sessions.run(url, readers)
    finally:
        serve.shutdown()
        ray.shutdown()
    flat: dict[str, Any] = {"feature_read_speedup_500": features["feature_read_speedup_500"]}
    flat |= {k: v for k, v in out["sessions"].items() if not isinstance(v, dict)}
    for rate in RATES:
        feed, noop = out[f"feed_{rate}"], out[f"noop_{rate}"]
        flat[f"feed_p50_ms_{rate}"] = feed["p50_ms"]
        flat[f"feed_p99_ms_{rate}"] = feed["p99_ms"]
        flat[f"feed_error_rate_{rate}"] = feed["error_rate"]
        flat[f"noop_p50_ms_{rate}"] = noop["p50_ms"]
        flat[f"feed_vs_noop_p50_ratio_{rate}"] = feed["p50_ms"] / max(noop["p50_ms"], 1e-9)
    flat["noop_p50_ms"] = flat["noop_p50_ms_50"]
    flat["feed_vs_noop_p50_ratio"] = flat["feed_vs_noop_p50_ratio_50"]
    flat["mean_candidates"] = float(np.mean([out[f"feed_{r}"]["mean_candidates"] for r in RATES]))
    return flat | {
        "runs": out,
        "note": "open loop (locust, constant rate per client, many idle clients), "
        f"{DURATION_S} s per run after all clients started; 2-core machine shared with "
        "Cassandra, Redis, MLflow and the load generator: absolute times are indicative only",
    }
