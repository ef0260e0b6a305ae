"""Capacity planning: schedules from forecasts, and the minute replay that judges them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from prefetch import capacity as cp

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


def test_plan_bounds_hold_the_autoscaler() -> None:
    demand = np.full(120, 600.0)
    ours = cp.planned_replicas(demand, np.array([1, 5]), CFG)
    assert set(ours[:60]) == {2}  # 600/(600 × 0.9) → 2, within [1, 3]
    assert set(ours[60:]) == {5}  # the plan's floor
    spike = demand.copy()
    spike[10:] = 6000.0
    capped = cp.planned_replicas(spike, np.array([1, 1]), CFG)
    assert capped.max() == 3  # never above 3 × the plan
    with pytest.raises(ValueError, match="fewer hours"):
        cp.planned_replicas(np.zeros(61), np.array([1]), CFG)


def test_compare_keys_and_ratios() -> None:
    demand = cp.minute_demand(np.full(24, 72_000), seed=0)
    plan = cp.replica_schedule(np.full(24, 72_000 * 1.1), CFG)
    out = cp.compare(demand, plan, CFG)
    for key in (
        "underprov_minutes_frac",
        "replica_hours_over_perfect",
        "reactive_underprov_minutes_frac",
        "reactive_replica_hours_over_perfect",
    ):
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
    assert all(r["max_replicas"] == max(3 * r["min_replicas"], r["min_replicas"] + 1) for r in rows)
    assert (tmp_path / "cap_stationary.png").stat().st_size > 10_000


def test_cli_names_a_bad_variant() -> None:
    from typer.testing import CliRunner

    from pipelines.cli import app

    res = CliRunner().invoke(app, ["capacity", "plan", "--variants", "nope"])
    assert res.exit_code == 2
    assert "nope" in res.output
