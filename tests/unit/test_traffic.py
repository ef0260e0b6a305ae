"""Traffic series: seasonality, variants, seeding, and the same counts from the service's logs."""

import numpy as np
import pandas as pd
import pytest

from core import constants as C
from simulator.traffic import TrafficConfig, from_logs, generate, per_minute


def test_same_seed_same_series_other_seed_other_series():
    a, b = generate(TrafficConfig(weeks=3, seed=1)), generate(TrafficConfig(weeks=3, seed=1))
    c = generate(TrafficConfig(weeks=3, seed=2))
    pd.testing.assert_frame_equal(a.frame(), b.frame())
    assert not np.array_equal(a.requests, c.requests)
    np.testing.assert_array_equal(a.request_rate, c.request_rate)  # the truth is not noise


def test_requests_peak_in_the_evening_and_at_the_weekend():
    t = generate(TrafficConfig(weeks=4, seed=0))
    by_hour = pd.Series(t.requests, index=t.index).groupby(t.index.hour).mean()
    assert by_hour.loc[18:22].mean() > 3 * by_hour.loc[5:9].mean()
    by_day = pd.Series(t.requests, index=t.index).groupby(t.index.dayofweek).mean()
    assert by_day.loc[5:6].mean() > 1.15 * by_day.loc[1:2].mean()


def test_counts_scatter_around_the_true_rate():
    t = generate(TrafficConfig(weeks=4, seed=0))
    assert abs(t.requests.mean() / t.request_rate.mean() - 1) < 0.01
    assert abs(t.requests.mean() - 2000) < 60


def test_growth_grows_and_stationary_does_not():
    week = 168
    for variant, lo, hi in (("growth", 1.25, 1.45), ("stationary", 0.97, 1.03)):
        y = generate(TrafficConfig(variant=variant, weeks=12, seed=0)).requests
        ratio = y[-week:].sum() / y[:week].sum()  # 11 weeks at 3%/week ≈ 1.38
        assert lo < ratio < hi, (variant, ratio)


def test_events_are_spikes_and_a_shift_moves_the_level():
    base = generate(TrafficConfig(variant="stationary", weeks=8, seed=0)).request_rate
    event = generate(TrafficConfig(variant="event", weeks=8, seed=0)).request_rate
    lift = event / base
    assert lift.max() > 1.5 and np.mean(lift > 1.01) < 0.15
    shift = generate(TrafficConfig(variant="shift", weeks=8, seed=0))
    assert shift.requests[-168:].sum() > 1.4 * shift.requests[:168].sum()


def test_storage_grows_by_the_uploaded_bytes():
    t = generate(TrafficConfig(weeks=2, seed=0))
    assert (np.diff(t.storage_bytes) >= 0).all()
    assert t.storage_bytes[-1] - t.config.storage_start_bytes == pytest.approx(t.upload_bytes.sum())
    mean_size = t.upload_bytes.sum() / t.uploads.sum()
    assert 5e5 < mean_size < 2e6  # 80% photos of ~0.3 MB, 20% videos of ~5 MB


def test_per_minute_rate_sums_to_the_hourly_rate():
    t = generate(TrafficConfig(weeks=2, seed=0))
    minutes, rate, counts = per_minute(t.request_rate, t.index, 1000, seed=0)
    assert len(minutes) == 60 * len(t.index)
    assert rate.sum() == pytest.approx(t.request_rate.sum(), rel=0.01)
    assert abs(counts.sum() / rate.sum() - 1) < 0.01


def test_from_logs_counts_requests_events_and_uploads_per_hour():
    ts = pd.to_datetime(
        ["2026-01-01 10:05", "2026-01-01 10:05", "2026-01-01 10:50", "2026-01-01 12:10"], utc=True
    )
    impressions = pd.DataFrame({C.REQUEST_ID: [1, 1, 2, 3], C.EVENT_TS: ts})
    interactions = pd.DataFrame({C.EVENT_TS: ts[:1] + pd.Timedelta(seconds=1)})
    posts = pd.DataFrame(
        {"created_at": pd.to_datetime(["2026-01-01 12:59"], utc=True), "media_bytes": [500]}
    )
    out = from_logs(impressions, interactions, posts, storage_start_bytes=1000)
    assert list(out.index.hour) == [10, 11, 12]
    assert out["requests"].tolist() == [2, 0, 1]
    assert out["impressions"].tolist() == [3, 0, 1]
    assert out["events"].tolist() == [1, 0, 0]
    assert out["uploads"].tolist() == [0, 0, 1]
    assert out["storage_bytes"].tolist() == [1000, 1000, 1500]
