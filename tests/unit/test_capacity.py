"""Capacity planning: schedules from forecasts, and the minute replay that judges them."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pytest

from capacity import backtest
from capacity import plan as cp

CFG = cp.CapacityConfig(replica_rps=10.0, lag_min=2, burst_factor=3.0, min_replicas=1)


def test_schedule_covers_the_busiest_moment_of_each_hour() -> None:
    # 36,000 req/h = 10 req/s = one replica; the ramp to 72,000 needs two around the step
    q = np.array([36_000.0, 36_000.0, 72_000.0, 72_000.0])
    assert cp.replica_schedule(q, CFG).tolist() == [1, 2, 2, 2]
    assert cp.replica_schedule(np.zeros(3), CFG).tolist() == [1, 1, 1]  # never below the floor


def test_minute_demand_sums_to_each_hour_and_follows_the_ramp() -> None:
    hours = np.array([600, 1200, 1800])
    m = cp.minute_demand(hours, seed=1)
    assert m.reshape(3, 60).sum(axis=1).tolist() == hours.tolist()
    assert m[60:120][:30].sum() < m[60:120][30:].sum()  # rising through the middle hour


def test_judge_counts_short_minutes_and_unserved_requests() -> None:
    demand = np.array([500, 700, 1300, 600])  # replica: 600 per minute
    r = cp.judge(demand, np.array([1, 1, 2, 1]), CFG)
    assert r["underprov_minutes"] == 2  # 700 > 600 and 1300 > 1200
    assert r["unserved_requests"] == 100 + 100
    assert r["replica_hours"] == pytest.approx(5 / 60)


def test_reactive_lags_and_perfect_does_not() -> None:
    demand = np.array([600] * 5 + [3000] * 5, dtype=float)
    perfect = cp.perfect_replicas(demand, CFG)
    assert perfect.tolist() == [1] * 5 + [5] * 5
    reactive = cp.reactive_replicas(demand, CFG)  # 70%: 600/420 → 2; 3000/420 → 8
    assert reactive.tolist() == [2] * 7 + [8] * 3  # two minutes late
    assert cp.judge(demand, reactive, CFG)["underprov_minutes"] == 2


def test_minute_rate_is_continuous_and_keeps_each_hours_total() -> None:
    hours = np.array([600.0, 600.0, 2400.0, 2400.0, 900.0])
    rate = cp.minute_rate(hours)
    np.testing.assert_allclose(rate.reshape(5, 60).mean(axis=1), hours, rtol=1e-9)
    steps = np.abs(np.diff(rate))
    edge = np.zeros(len(steps), bool)
    edge[59::60] = True  # the step from minute 59 of an hour to minute 0 of the next
    assert steps[edge].max() <= steps[~edge].max() + 1e-9  # no jump where hours meet
    assert steps.max() < 0.05 * hours.max()  # every step is small
    m = cp.minute_demand((hours * 1000).astype(int), seed=3).astype(float)
    jumps = np.abs(np.diff(m)) / m[:-1]
    assert jumps[59::60].max() < 0.05  # splitting each hour on its own jumped ~25% here


def test_guided_sizes_for_the_growth_ahead_and_ignores_a_fall() -> None:
    assert cp.guided(1000.0, 1.0, 100.0) == 10
    assert cp.guided(1000.0, 1.25, 100.0) == 13  # ceil(12.5)
    assert cp.guided(1000.0, 0.5, 100.0) == 10  # the fleet is not shrunk ahead of a fall
    np.testing.assert_array_equal(cp.guided(np.array([0.0, 101.0]), 1.0, 100.0), [0, 2])


def test_lead_growth_follows_the_forecast_shape() -> None:
    flat = cp.lead_growth(np.full(3, 3600.0), lag_min=5)
    np.testing.assert_allclose(flat, 1.0)
    ramp = cp.lead_growth(np.array([3600.0, 7200.0, 14_400.0]), lag_min=5)
    assert ramp[60:120].min() > 1.0  # rising all through the middle hour


def test_plan_keeps_the_hours_bounds_and_leads_the_ramp() -> None:
    cfg = CFG  # 10 req/s a replica, 2-minute lag, floor 0.8 × plan, ceiling 3 × plan
    flat = np.full(120, 600.0)  # one replica's full load each minute
    ours = cp.planned_replicas(flat, np.full(2, 36_000.0), cfg)
    assert set(ours) == {2}  # 600 / (600 × 0.9) → 2
    # Plans of 3 and 5 replicas (each hour sized for halfway to a busier neighbour): floors
    # ceil(0.8 × plan), ceilings 3 × plan or twice the busiest plan.
    lo, hi = cp.hourly_bounds(np.array([36_000.0, 180_000.0]), cfg)
    assert lo.tolist() == [3, 4] and hi.tolist() == [10, 15]
    floor = cp.planned_replicas(flat, np.array([36_000.0, 180_000.0]), cfg)
    assert set(floor[:60]) == {3} and set(floor[60:]) == {
        4
    }  # the hour's min_replicas holds when the load is low
    spike = flat.copy()
    spike[10:] = 60_000.0
    assert cp.planned_replicas(spike, np.full(2, 36_000.0), cfg).max() == 3  # 3 × the plan
    night_and_day = np.array([36_000.0] * 3 + [360_000.0] * 3)  # plans of 1 and 10
    assert cp.hourly_bounds(night_and_day, cfg)[1].tolist()[:2] == [20, 20]  # 2 × the peak
    # A forecast ramp (doubling each hour) and a 15-minute lag: the plan adds replicas before
    # the load reaches them; reactive at the same target runs short on the way up.
    slow = replace(cfg, lag_min=15)
    rate_h = np.array([36_000.0, 72_000.0, 144_000.0, 288_000.0])
    demand = cp.minute_rate(rate_h) / 60.0
    ours = cp.planned_replicas(demand, rate_h, slow)
    same = cp.reactive_replicas(demand, slow, slow.inbound_target)
    assert cp.judge(demand, ours, slow)["underprov_minutes"] == 0
    assert cp.judge(demand, same, slow)["underprov_minutes"] > 30
    # A spike the forecast does not know (flat plan): the load's own climb is extrapolated.
    spike_h = np.array([72_000.0, 72_000.0, 216_000.0, 360_000.0, 360_000.0])
    demand = cp.minute_rate(spike_h) / 60.0
    flat_plan = np.full(5, 72_000.0)
    roomy = replace(slow, burst_factor=10.0)  # a ceiling above the spike
    ours = cp.judge(demand, cp.planned_replicas(demand, flat_plan, roomy), roomy)
    same = cp.judge(demand, cp.reactive_replicas(demand, slow, slow.inbound_target), slow)
    assert ours["underprov_minutes"] < same["underprov_minutes"] / 2
    assert cp.climb(np.array([104.0, 110.0, 90.0]), 100.0, 1.05, 1.0).tolist() == [1.0, 1.1, 1.0]
    assert cp.climb(5.0, 0.0, 1.05, 10.0) == 1.0  # from idle: not an infinite climb
    # From idle to a trickle the plan does not jump to its ceiling.
    idle = np.r_[np.zeros(30), np.full(30, 5.0)]
    assert cp.planned_replicas(idle, np.full(1, 600.0), roomy).max() == 1
    # A lag longer than the demand still gives one decision a minute.
    assert len(cp.planned_replicas(np.full(10, 600.0), np.full(1, 36_000.0), slow)) == 10
    with pytest.raises(ValueError, match="fewer hours"):
        cp.planned_replicas(np.zeros(61), np.array([1.0]), cfg)


def test_compare_keys_and_ratios() -> None:
    demand = cp.minute_demand(np.full(24, 72_000), seed=0)
    out = cp.compare(demand, np.full(24, 72_000 * 1.1), CFG)
    for key in backtest.SUMMARY_KEYS:
        assert key in out
    assert out["replica_hours_over_perfect"] >= 1.0
    assert out["reactive_replica_hours_over_perfect"] > out["replica_hours_over_perfect"]


def test_storage_and_workers() -> None:
    assert cp.days_until_full(90.0, np.full(48, 1.0), 100.0) == pytest.approx(10 / 24)
    assert cp.days_until_full(0.0, np.full(24, 1.0), 48.0) == pytest.approx(2.0)
    assert cp.days_until_full(0.0, np.zeros(24), 10.0) == math.inf
    assert cp.days_until_full(20.0, np.ones(3), 10.0) == 0.0
    # 1,800 uploads/h per worker; each hour sized for halfway to a busier neighbour
    workers = cp.upload_workers(np.array([1800.0, 3700.0, 100.0]), cp.CapacityConfig())
    assert workers.tolist() == [2, 3, 2]  # 2,750 → 2; 3,700 → 3; 1,900 → 2


def test_bad_config() -> None:
    with pytest.raises(ValueError, match="replica_rps"):
        cp.CapacityConfig(replica_rps=0)
    with pytest.raises(ValueError, match="target"):
        cp.CapacityConfig(inbound_target=1.5)
    with pytest.raises(ValueError, match="burst_factor"):
        cp.CapacityConfig(burst_factor=0.5)
    with pytest.raises(ValueError, match="floor_share"):
        cp.CapacityConfig(floor_share=1.5)
    with pytest.raises(ValueError, match="climb_threshold"):
        cp.CapacityConfig(climb_threshold=0.9)


def test_evaluate_end_to_end_on_a_short_series(tmp_path) -> None:
    import yaml
    from typer.testing import CliRunner

    from pipelines.cli import app

    out = tmp_path / "cap.json"
    res = CliRunner().invoke(
        app,
        ["capacity", "plan", "--variants", "stationary", "--weeks", "6", "--folds", "1",
         "--json", str(out)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    import json

    data = json.loads(out.read_text())
    fold = data["variants"]["stationary"]["folds"][0]
    assert fold["replica_hours_over_perfect"] >= 1.0
    assert 0.0 <= data["underprov_minutes_frac"] <= 1.0
    sched = yaml.safe_load((tmp_path / "cap_stationary_schedule.yaml").read_text())
    rows = sched["feed_autoscaling"]
    assert len(rows) == 168
    assert all(1 <= r["min_replicas"] < r["max_replicas"] for r in rows)
    assert all(r["expected_rps"] > 0 for r in rows)
    assert set(data["by_lag"]) == {"5", "15", "30"}
    assert (tmp_path / "cap_stationary.png").stat().st_size > 10_000


def test_cli_names_a_bad_variant() -> None:
    from typer.testing import CliRunner

    from pipelines.cli import app

    res = CliRunner().invoke(app, ["capacity", "plan", "--variants", "nope"])
    assert res.exit_code == 2
    assert "nope" in res.output
    res = CliRunner().invoke(app, ["capacity", "plan", "--weeks", "6", "--folds", "4"])
    assert res.exit_code == 2
    assert "the forecaster needs 3" in res.output


BOUNDS = ("low", "median", "high")


def test_the_band_widens_the_80_interval_to_95_and_is_read_between_hour_midpoints() -> None:
    from capacity.anomaly import band_at, band_bounds, band_rows

    low, high = band_bounds(np.array([100.0]), np.array([80.0]), np.array([130.0]))
    assert low[0] == pytest.approx(100 - 20 * 1.959964 / 1.281552)
    assert high[0] == pytest.approx(100 + 30 * 1.959964 / 1.281552)
    q = {0.1: np.array([3600.0, 7200.0]), 0.5: np.array([7200.0, 14400.0])}
    q[0.9] = q[0.5] * 1.5
    rows = band_rows(["2026-01-01T00:00:00+00:00", "2026-01-01T01:00:00+00:00"], {"requests": q})
    assert rows[1]["requests_median_rps"] == pytest.approx(4.0)
    t0 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    assert band_at(rows, t0 + 1800)["requests_median_rps"] == pytest.approx(2.0)  # a midpoint
    assert band_at(rows, t0 + 3600)["requests_median_rps"] == pytest.approx(3.0)  # halfway
    assert band_at(rows, t0 + 7199)["requests_median_rps"] == pytest.approx(4.0)  # held flat
    assert band_at(rows, t0 - 1) is None and band_at(rows, t0 + 7200) is None  # outside
    assert band_at([], t0) is None


def test_schedule_plans_the_week_after_the_history(tmp_path) -> None:
    import pandas as pd
    import yaml
    from typer.testing import CliRunner

    from pipelines.cli import app
    from serving.autoscaling import load_plan
    from simulator.traffic import TrafficConfig, generate

    t = generate(TrafficConfig(variant="stationary", weeks=5, seed=2, requests_per_hour=72_000))
    frame = pd.DataFrame(
        {
            "ds": t.index,
            "requests": t.requests,
            "uploads": t.uploads,
            "upload_bytes": t.upload_bytes,
        }
    )
    history = tmp_path / "history.parquet"
    frame.to_parquet(history)
    out = tmp_path / "plan.yaml"
    runner = CliRunner()
    res = runner.invoke(app, ["capacity", "schedule", "--history", str(history), "--out", str(out)])
    assert res.exit_code == 0, res.output
    plan = load_plan(out)
    first = pd.Timestamp(plan["hours"][0])
    assert first == pd.Timestamp(t.index[-1]) + pd.Timedelta(hours=1)
    assert len(plan["hours"]) == 168
    # ~20 req/s expected on average: one replica of 20 req/s, a few at the daily peak
    assert 5 < sum(plan["expected_rps"]) / 168 < 40
    raw = yaml.safe_load(out.read_text())
    assert len(raw["upload_workers"]) == 168
    band = raw["forecast_band"]  # what monitoring judges the live rates against
    assert [r["hour"] for r in band] == plan["hours"]
    for name in ("requests", "uploads"):
        lo, med, hi = (np.array([r[f"{name}_{b}_rps"] for r in band]) for b in BOUNDS)
        assert np.all(lo >= 0) and np.all(lo <= med) and np.all(med <= hi)
        assert np.mean(hi > lo) > 0.9  # a band, not a line
    # the true rate of the planned week (the same generator, a week longer) mostly inside it
    truth = generate(TrafficConfig(variant="stationary", weeks=6, seed=2, requests_per_hour=72_000))
    rate = truth.requests[-168:] / 3600.0
    lo, hi = (np.array([r[f"requests_{b}_rps"] for r in band]) for b in ("low", "high"))
    assert np.mean((rate >= lo * 0.9) & (rate <= hi * 1.1)) > 0.8

    frame.head(200).to_parquet(short := tmp_path / "short.parquet")
    res = runner.invoke(app, ["capacity", "schedule", "--history", str(short), "--out", str(out)])
    assert res.exit_code == 2 and "200 hours of history" in res.output
    frame.drop(columns="uploads").to_csv(bad := tmp_path / "bad.csv", index=False)
    res = runner.invoke(app, ["capacity", "schedule", "--history", str(bad), "--out", str(out)])
    assert res.exit_code == 2 and "uploads" in res.output
    frame.assign(uploads=frame["uploads"].where(frame.index != 5, -1)).to_csv(
        neg := tmp_path / "neg.csv", index=False
    )
    res = runner.invoke(app, ["capacity", "schedule", "--history", str(neg), "--out", str(out)])
    assert res.exit_code == 2 and "counts ≥ 0" in res.output
    frame.drop(index=[10]).to_parquet(gap := tmp_path / "gap.parquet")
    res = runner.invoke(app, ["capacity", "schedule", "--history", str(gap), "--out", str(out)])
    assert res.exit_code == 2 and "consecutive" in res.output


def test_the_replayed_lease_arrives_one_lag_after_its_grant_and_lapses_after_renewals() -> None:
    from capacity import response
    from capacity.anomaly import episodes

    cfg = cp.CapacityConfig(replica_rps=1.0, inbound_target=1.0, lag_min=10)  # 60 a replica-minute
    demand = np.full(300, 60.0)
    demand[100:160] = 300.0  # a spike: five replicas' load for an hour
    high = np.full(300, 80.0)
    alert = response.above_band(demand, high)
    assert episodes(alert) == [(101, 164)]  # held 2 minutes; the 5-minute count stays over 4 more
    floor, grants = response.lease_floor(demand, alert, cfg, lease_min=30, renew_min=5)
    # sized on the last 5 minutes (two of them in the spike), raised at the next renewal
    assert [(g["minute"], g["replicas"]) for g in grants[:2]] == [(101, 3), (106, 5)]
    assert all(g["replicas"] == 5 for g in grants[1:])  # never lowered
    assert floor[110] == 0 and floor[111] == 3 and floor[116] == 5  # one lag after each grant
    last = grants[-1]["minute"]
    assert floor[last + 29] == 5 and floor[last + 30] == 0  # lease_min after the last renewal
    short, _ = response.lease_floor(demand, alert, cfg, lease_min=10)
    assert not short.any()  # a lease no longer than the lag never serves
    capped, _ = response.lease_floor(demand, alert, cfg, lease_min=30, ceiling=3, headroom=2.0)
    assert capped.max() == 3
    quiet = response.above_band(np.full(300, 60.0), high)
    assert not quiet.any()


def test_the_instant_oracle_serves_each_minutes_load_one_lag_later() -> None:
    from capacity import response

    cfg = cp.CapacityConfig(replica_rps=1.0, inbound_target=1.0, lag_min=10)
    demand = np.full(100, 60.0)
    demand[40:70] = 300.0
    floor = response.oracle_floor(demand, cfg)
    assert floor[:10].tolist() == [0] * 10  # nothing is known before the first lag
    assert floor[49] == 1 and floor[50] == 5 and floor[79] == 5 and floor[80] == 1
    # so a spike's first lag is short whatever the response: 10 of its 30 minutes at 1 replica
    short = cp.judge(demand, np.maximum(floor, 1), cfg)["underprov_minutes"]
    assert short == 10
    assert response.oracle_floor(demand, cfg, headroom=1.5)[50] == 8


def test_reach_sorts_short_minutes_by_what_a_band_response_could_do() -> None:
    from capacity import response

    cfg = cp.CapacityConfig(replica_rps=1.0, inbound_target=1.0, lag_min=10)
    demand = np.full(100, 60.0)
    demand[20:25] = 100.0  # short (1 replica) but inside the band
    demand[40:70] = 300.0  # above the band for 30 minutes
    high = np.full(100, 150.0)
    got = response.reach(demand, np.ones(100, np.int64), high, cfg)
    assert got == {"in_band": 5, "within_lag_of_crossing": 10, "reachable": 20}
    assert sum(response.reach(demand, np.full(100, 5), high, cfg).values()) == 0
