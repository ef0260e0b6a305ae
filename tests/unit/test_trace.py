"""The media request trace: deterministic, ordered, consistent, and free of look-ahead."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from media import objects as media
from simulator.config import WorldConfig
from simulator.trace import CONTINUE_PRIOR, _online_rate, generate, stats

END = datetime(2026, 3, 2, tzinfo=UTC)


@pytest.fixture(scope="module")
def trace():
    return generate(WorldConfig(users=400, days=3, seed=5, end=END))


def test_deterministic_and_time_ordered(trace) -> None:
    again = generate(WorldConfig(users=400, days=3, seed=5, end=END))
    assert np.array_equal(trace.obj, again.obj)
    assert np.array_equal(trace.time_s, again.time_s)
    assert np.all(np.diff(trace.time_s) >= 0)
    assert np.all(np.diff(trace.v_time_s) >= 0)
    other = generate(WorldConfig(users=400, days=3, seed=6, end=END))
    assert not np.array_equal(trace.obj[:100], other.obj[:100])


def test_objects_and_sizes_are_consistent(trace) -> None:
    post, full = trace.obj // 2, trace.obj % 2 == 1
    thumbs = ~full
    assert np.array_equal(trace.size[thumbs], media.thumb_bytes(post[thumbs]))
    # every request of an object carries the same size
    order = np.argsort(trace.obj, kind="stable")
    o, z = trace.obj[order], trace.size[order]
    same = o[1:] == o[:-1]
    assert np.array_equal(z[1:][same], z[:-1][same])
    # requests come from viewed items: never past a session's depth
    assert trace.v_pos.max() < trace.s_depth.max()
    assert np.all(trace.s_depth <= trace.s_len)


def test_online_rates_use_only_earlier_sessions() -> None:
    user = np.array([0, 1, 0, 0, 1])
    hits = np.array([5, 0, 1, 0, 3])
    trials = np.array([5, 4, 2, 1, 3])
    rate = _online_rate(user, hits, trials, CONTINUE_PRIOR)
    m, k = CONTINUE_PRIOR
    assert rate[0] == pytest.approx(m)  # first session of user 0: the prior only
    assert rate[1] == pytest.approx(m)
    assert rate[2] == pytest.approx((m * k + 5) / (k + 5))
    assert rate[3] == pytest.approx((m * k + 6) / (k + 7))
    assert rate[4] == pytest.approx((m * k + 0) / (k + 4))


def test_stats(trace) -> None:
    s = stats(trace)
    assert s["requests"] == trace.n > 10_000
    assert 0 < s["footprint_bytes"] < s["demand_bytes"]
    assert 0.0 <= s["one_hit_share"] < 1.0
