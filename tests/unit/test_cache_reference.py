"""Our compiled cache policies against libCacheSim, and the prefetch accounting of S3-FIFO."""

from __future__ import annotations

import numpy as np
import pytest

from prefetch.replay import cache


def _zipf_trace(seed: int, n: int = 60_000, n_obj: int = 6_000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    obj = (rng.zipf(1.15, n) % n_obj).astype(np.int64)
    sizes = (rng.lognormal(10, 1.3, n_obj) + 1).astype(np.int64)
    (dense,), n_dense = cache.dense_ids(obj)
    return dense, cache.object_sizes(dense, sizes[obj], n_dense)


@pytest.mark.parametrize("seed", [0, 1])
def test_policies_agree_with_libcachesim(seed: int) -> None:
    from prefetch.replay.engine import _libcachesim_diff

    obj, osize = _zipf_trace(seed)
    footprint = int(osize.sum())
    caps = {f: int(footprint * f) for f in (0.001, 0.01, 0.1)}
    worst, diffs = _libcachesim_diff(obj, osize, cache.next_use(obj), caps)
    assert len(diffs) == 12
    assert worst <= 0.5, diffs


def test_belady_beats_online_policies_on_bytes() -> None:
    obj, osize = _zipf_trace(3)
    cap = int(osize.sum() * 0.01)
    belady = cache.replay("belady", obj, osize, cap).byte_hit_ratio
    for pol in ("fifo", "lru", "s3fifo"):
        assert belady > cache.replay(pol, obj, osize, cap).byte_hit_ratio


def test_next_use() -> None:
    nxt = cache.next_use(np.array([5, 7, 5, 5, 7]))
    assert nxt.tolist() == [2, 4, 3, 5, 5]


def test_object_with_two_sizes_is_refused() -> None:
    with pytest.raises(ValueError, match="two sizes"):
        cache.object_sizes(np.array([0, 0]), np.array([10, 11]), 1)


def _events(rows: list[tuple[int, int, float, float]]) -> tuple[np.ndarray, ...]:
    kind, obj, t, ready = (np.array(c) for c in zip(*rows, strict=True))
    return kind.astype(np.int8), obj.astype(np.int64), t.astype(float), ready.astype(float)


def _run(rows: list[tuple[int, int, float, float]], **kw: float) -> cache.Result:
    kind, obj, t, ready = _events(rows)
    osize = np.full(int(obj.max()) + 1, 100, dtype=np.int64)
    args = {"warm": 0, "budget_frac": 1.0, "burst_bytes": 1e9, **kw}
    return cache.replay_prefetch("ours", kind, obj, t, ready, osize, 10_000, **args)


def test_prefetch_in_time_is_a_hit_and_counts_egress_once() -> None:
    # budget: 1.0 × 100 bytes of demand (object 9) before the prefetch of object 1
    r = _run([(0, 9, 0.0, 0.0), (1, 1, 1.0, 1.5), (0, 1, 2.0, 2.0)])
    assert (r.requests, r.prefetched, r.prefetch_used, r.prefetch_late) == (2, 1, 1, 0)
    assert r.hit_ratio == 0.5  # object 9 missed, object 1 was prefetched in time
    assert r.egress_bytes == 200  # the miss of 9 and the prefetch of 1; no miss for 1
    assert r.precision == 1.0


def test_late_prefetch_is_a_miss_without_second_egress() -> None:
    r = _run([(0, 9, 0.0, 0.0), (1, 1, 1.0, 3.0), (0, 1, 2.0, 2.0)])
    assert (r.prefetch_used, r.prefetch_late) == (1, 1)
    assert r.hit_ratio == 0.0
    assert r.egress_bytes == 200


def test_no_budget_no_prefetch() -> None:
    r = _run([(1, 1, 0.0, 0.1), (0, 1, 2.0, 2.0)], budget_frac=0.0)
    assert r.prefetched == 0
    assert r.hit_ratio == 0.0


def test_unused_prefetch_evicted_is_wasted() -> None:
    # cache 10,000 B = 100 objects of 100 B; prefetch object 0, then 300 other objects
    rows = [(0, 5000, 0.0, 0.0), (1, 0, 0.5, 0.6)]
    rows += [(0, 1 + k, 1.0 + k, 1.0 + k) for k in range(300)]
    r = _run(rows, pending_s=0.0)
    assert r.prefetched == 1
    assert r.prefetch_used == 0
    assert r.wasted_bytes == 100
