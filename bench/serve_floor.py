"""Feed latency next to Ray Serve's own floor, measured side by side in one run.

Reference: ``/healthz`` on the same deployment (HTTP proxy → replica → FastAPI, no work).
Ours: ``/v1/feed/{user}`` (Cassandra candidates, Feast online features, LightGBM scoring).
Requests alternate between the two so both see the same machine noise.
"""

from __future__ import annotations

import random
import time
from typing import Any

import httpx
import numpy as np
import pandas as pd
from tqdm import tqdm

from core import constants as C
from core.settings import Settings


def _pcts(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {f"p{q}_ms": float(np.percentile(a, q)) for q in (50, 90, 99)} | {"n": float(len(a))}


def run(settings: Settings, requests: int = 300, seed: int = 0) -> dict[str, Any]:
    url = settings.serve_url
    try:
        httpx.get(f"{url}/healthz", timeout=2).raise_for_status()
    except httpx.HTTPError as exc:
        raise RuntimeError(f"no feed service at {url} ({exc}): run `make demo` first") from exc
    users = pd.read_parquet(settings.world_dir / "impressions.parquet", columns=[C.USER_ID])
    pool = users[C.USER_ID].unique().tolist()
    rng = random.Random(seed)
    floor: list[float] = []
    feed: list[float] = []
    candidates: list[int] = []
    errors = 0
    with httpx.Client(timeout=10) as client:
        for _ in range(20):  # warm-up, not measured
            client.get(f"{url}/healthz")
            client.get(f"{url}/v1/feed/{rng.choice(pool)}")
        for _ in tqdm(range(requests), desc="serve floor bench", unit="pair"):
            t0 = time.perf_counter()
            client.get(f"{url}/healthz")
            floor.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            r = client.get(f"{url}/v1/feed/{rng.choice(pool)}", params={"limit": 20})
            feed.append((time.perf_counter() - t0) * 1000)
            if r.status_code == 200:
                candidates.append(r.json()["candidates"])
            else:
                errors += 1
    f, o = _pcts(floor), _pcts(feed)
    return {
        "reference_healthz": f,
        "ours_feed": o,
        "ratio_p50": o["p50_ms"] / f["p50_ms"],
        "ratio_p99": o["p99_ms"] / f["p99_ms"],
        "mean_candidates": float(np.mean(candidates)) if candidates else 0.0,
        "errors": errors,
        "note": "closed loop, one client, sequential; absolute times on a 2-core machine are "
        "indicative only — compare the ratios",
    }
