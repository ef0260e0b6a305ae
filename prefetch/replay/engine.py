"""Trace replay: demand-only cache policies against prefetching ones, on the same trace.

``feedcast prefetch replay`` generates the world's media request trace
(:mod:`simulator.trace`), then replays it through FIFO, LRU, S3-FIFO, Belady (object and byte
versions), *ours* (S3-FIFO fed by the planner's warm actions at the moment each page is served)
and an *oracle prefetcher* (S3-FIFO fed, at the start of every window, with the objects the
next window will request, most requests per byte first). Both prefetchers spend the same byte
budget: a share of the demand bytes seen so far. Requests in the warm-up share of the trace
fill the cache and are not counted.

A prefetch takes ``FETCH_BASE_S + bytes / FETCH_BPS`` to arrive; a request that comes earlier
is a *late* prefetch (a miss; the in-flight fetch serves it, so its bytes leave the origin once).
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from prefetch import planner
from prefetch.replay import cache, real_sizes
from simulator.config import WorldConfig
from simulator.trace import Trace, generate, stats

FETCH_BASE_S = 0.05
FETCH_BPS = 12.5e6  # 100 Mbit/s from the origin
CACHE_FRACS = (0.001, 0.01, 0.1)
ORACLE_WINDOW_S = 15.0  # the best of 5, 15 and 60 s on the default world
BURST_S = 600.0  # unspent budget is kept for at most this many seconds of demand


def fetch_s(size: np.ndarray) -> np.ndarray:
    return FETCH_BASE_S + np.asarray(size, dtype=np.float64) / FETCH_BPS


def replay_config(seed: int = 0, **overrides: Any) -> WorldConfig:
    """The default world of the replay: the demo's world at 12,000 users (~7 M requests)."""
    return WorldConfig(seed=seed, **{"users": 12_000, **overrides})


def _ours_events(trace: Trace, cfg: planner.PlanConfig) -> tuple[np.ndarray, ...]:
    """Warm actions of the planner: (time, object id, size, kind), at serving and impressions."""
    return planner.plan_bulk(cfg, trace)


def _oracle_events(trace: Trace, window_s: float) -> tuple[np.ndarray, ...]:
    """The next window's requested objects, at the window's start, most requests per byte first."""
    win = np.floor(trace.time_s / window_s).astype(np.int64)
    key = win * (int(trace.obj.max()) + 1) + trace.obj
    _, first, count = np.unique(key, return_index=True, return_counts=True)
    w, obj, size = win[first], trace.obj[first], trace.size[first]
    order = np.lexsort((-(count / size), w))
    return w[order] * window_s, obj[order], size[order], np.ones(len(order), np.int8)


def _merge(
    trace: Trace, pf_time: np.ndarray, pf_obj: np.ndarray, pf_size: np.ndarray, pf_kind: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Demand and warm events in time order; at equal times demand goes first."""
    t = np.concatenate([trace.time_s, pf_time])
    kind = np.concatenate([np.zeros(trace.n, np.int8), pf_kind.astype(np.int8)])
    obj = np.concatenate([trace.obj, pf_obj])
    ready = np.concatenate([trace.time_s, pf_time + fetch_s(pf_size)])
    order = np.lexsort((np.arange(len(t)), kind, t))
    return kind[order], obj[order], t[order], ready[order]


def _libcachesim_diff(
    obj: np.ndarray, osize: np.ndarray, nxt: np.ndarray, caps: dict[float, int]
) -> tuple[float, dict[str, float]]:
    """Largest |ours − libCacheSim| hit ratio (percentage points) over FIFO/LRU/S3-FIFO/Belady."""
    import libcachesim as lcs  # lazy: ~50-100 ms; only the cross-check (reference=True)

    n = len(obj)
    rec = np.zeros(n, dtype=[("t", "<u4"), ("id", "<u8"), ("sz", "<u4"), ("nx", "<i8")])
    rec["t"] = np.arange(n) // 1000
    rec["id"] = obj + 1
    rec["sz"] = osize[obj]
    rec["nx"] = np.where(nxt >= n, np.iinfo(np.int64).max, nxt)
    diffs: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.oracleGeneral"
        rec.tofile(path)
        classes = {"fifo": lcs.FIFO, "lru": lcs.LRU, "s3fifo": lcs.S3FIFO, "belady": lcs.Belady}
        for frac, cap in caps.items():
            for name, cls in classes.items():
                reader = lcs.TraceReader(str(path), lcs.TraceType.ORACLE_GENERAL_TRACE)
                miss, _ = cls(cap).process_trace(reader)
                ours = cache.replay(name, obj, osize, cap, nxt=nxt).hit_ratio
                diffs[f"{name}@{frac:g}"] = abs(ours - (1 - miss)) * 100
    return max(diffs.values()), diffs


def run(
    config: WorldConfig,
    *,
    cache_fracs: tuple[float, ...] = CACHE_FRACS,
    budget_frac: float = 0.10,
    warm_frac: float = 0.2,
    plan: planner.PlanConfig | None = None,
    oracle_window_s: float = ORACLE_WINDOW_S,
    reference: bool = True,
    real_photos: int = 0,
    sizes_cache: Path | None = None,
    progress: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """Replay one world's trace through every policy at every cache size; figures as a dict.
    ``real_photos``: photo sizes from the media tier's own renditions, that many of the most
    requested photos rendered (:mod:`prefetch.replay.real_sizes`); 0: simulated sizes."""
    plan = plan or planner.PlanConfig()
    t0 = time.perf_counter()
    progress("generating the trace")
    trace = generate(config)
    t_gen = time.perf_counter() - t0
    sizes: dict[str, Any] = {"photo_sizes": "simulated (a lognormal per post)"}
    if real_photos > 0:
        trace, sizes = real_sizes.real_photos(
            trace, real_photos, cache=sizes_cache, progress=progress
        )
        progress(
            f"photo sizes real: {sizes['photos_rendered']:,} of {sizes['photos']:,} photos "
            f"rendered, {sizes['photo_requests_own_size']:.0%} of photo requests their own; mean "
            f"{sizes['photo_mean_bytes_real'] / 1e3:.0f} KB (simulated "
            f"{sizes['photo_mean_bytes_simulated'] / 1e3:.0f} KB)"
        )
    tstats = stats(trace)
    progress(f"{trace.n:,} requests, {int(tstats['objects']):,} objects")

    ours_t, ours_obj, ours_size, ours_kind = _ours_events(trace, plan)
    or_t, or_obj, or_size, or_kind = _oracle_events(trace, oracle_window_s)
    (d_obj, d_ours, d_or), n_obj = cache.dense_ids(trace.obj, ours_obj, or_obj)
    osize = np.zeros(n_obj, dtype=np.int64)
    osize[d_ours], osize[d_or], osize[d_obj] = ours_size, or_size, trace.size
    footprint = int(osize[np.unique(d_obj)].sum())
    warm = int(trace.n * warm_frac)
    warm_t = trace.time_s[warm]
    nxt = cache.next_use(d_obj)
    span = trace.time_s[-1] - trace.time_s[0]
    burst = budget_frac * trace.size.sum() / span * BURST_S

    dense = Trace(**{**trace.__dict__, "obj": d_obj})  # same trace, dense object ids
    ev_ours = _merge(dense, ours_t, d_ours, ours_size, ours_kind)
    ev_or = _merge(dense, or_t, d_or, or_size, or_kind)

    results: dict[str, dict[str, Any]] = {}
    speed: dict[str, float] = {}
    caps = {f: max(1, int(footprint * f)) for f in cache_fracs}
    for frac, cap in caps.items():
        row: dict[str, Any] = {"cache_bytes": cap}
        for pol in cache.POLICIES:
            t = time.perf_counter()
            r = cache.replay(pol, d_obj, osize, cap, warm=warm, nxt=nxt)
            speed[pol] = trace.n / (time.perf_counter() - t)
            row[pol] = asdict(r)
        for name, (kind, obj, tt, ready) in (("ours", ev_ours), ("oracle_prefetch", ev_or)):
            t = time.perf_counter()
            first_counted = int(np.searchsorted(tt, warm_t, side="left"))
            r = cache.replay_prefetch(
                name,
                kind,
                obj,
                tt,
                ready,
                osize,
                cap,
                warm=first_counted,
                budget_frac=budget_frac,
                burst_bytes=burst,
            )
            speed[name] = len(kind) / (time.perf_counter() - t)
            row[name] = {**asdict(r), "precision": r.precision}
        results[f"{frac:g}"] = row
        progress(
            f"cache {frac:.1%}: s3fifo {row['s3fifo']['hit_ratio']:.3f}, "
            f"ours {row['ours']['hit_ratio']:.3f}, oracle {row['oracle_prefetch']['hit_ratio']:.3f}"
        )

    out: dict[str, Any] = {
        "world": config.model_dump(mode="json"),
        "trace": tstats,
        "sizes": sizes,
        "budget_frac": budget_frac,
        "warm_frac": warm_frac,
        "plan": asdict(plan),
        "oracle_window_s": oracle_window_s,
        "results": results,
        "requests_per_s": speed,
        "trace_gen_s": t_gen,
    }
    out.update(headline(results["0.01"] if "0.01" in results else next(iter(results.values()))))
    if reference:
        progress("checking against libCacheSim")
        worst, diffs = _libcachesim_diff(d_obj, osize, nxt, caps)
        out["libcachesim_max_abs_diff_pp"] = worst
        out["libcachesim_diff_pp"] = diffs
    return _finite(out)


def _finite(x: Any) -> Any:
    """NaN (no prefetch at all, no gap to close) as None: JSON has no NaN."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    return x


HEADLINE_KEYS = (
    "hit_lru",
    "hit_s3fifo",
    "hit_ours",
    "hit_belady",
    "hit_oracle_prefetch",
    "precision",
    "wasted_bytes_frac",
    "prefetch_bytes_frac",
    "egress_ours_over_s3fifo",
    "gap_closed",
    "late_prefetches",
    "libcachesim_max_abs_diff_pp",
)


def headline(row: dict[str, Any]) -> dict[str, float]:
    """The figures the issue names, from one cache size's results."""
    s3, ours, orc = row["s3fifo"], row["ours"], row["oracle_prefetch"]
    belady = max(row["belady"]["hit_ratio"], row["belady_size"]["hit_ratio"])
    gap = orc["hit_ratio"] - s3["hit_ratio"]
    return {
        "hit_fifo": row["fifo"]["hit_ratio"],
        "hit_lru": row["lru"]["hit_ratio"],
        "hit_s3fifo": s3["hit_ratio"],
        "hit_ours": ours["hit_ratio"],
        "hit_belady": belady,
        "hit_belady_bytes": row["belady"]["byte_hit_ratio"],
        "hit_oracle_prefetch": orc["hit_ratio"],
        "byte_hit_s3fifo": s3["byte_hit_ratio"],
        "byte_hit_ours": ours["byte_hit_ratio"],
        "precision": ours["precision"],
        "wasted_bytes_frac": ours["wasted_bytes"] / ours["demand_bytes"],
        "prefetch_bytes_frac": ours["prefetched_bytes"] / ours["demand_bytes"],
        "late_prefetches": ours["prefetch_late"],
        "egress_ours_over_s3fifo": ours["egress_bytes"] / s3["egress_bytes"],
        "gap_closed": (ours["hit_ratio"] - s3["hit_ratio"]) / gap if gap > 0 else math.nan,
    }
