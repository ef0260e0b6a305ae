"""The capacity plan's Ray Serve autoscaling policy: decisions, the plan file, the config."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import yaml

from capacity import plan as cp
from core.settings import Settings
from serving.app import autoscaling_config
from serving.autoscaling import (
    LEASED_POLICY,
    POLICY,
    FloorLease,
    ForecastPolicy,
    PlanError,
    _leased,
    load_plan,
)

START = datetime(2026, 12, 1, tzinfo=UTC)
T0 = START.timestamp()


def plan(rps: list[float], lo: list[int], hi: list[int], lead_s: float = 300.0) -> ForecastPolicy:
    hours = [(START + timedelta(hours=i)).isoformat() for i in range(len(rps))]
    return ForecastPolicy(hours, rps, lo, hi, lead_s)


def test_flat_plan_is_the_target_rule_inside_the_hours_bounds() -> None:
    p = plan([100.0] * 3, [2, 2, 2], [8, 8, 8])
    assert p.decide(T0 + 90 * 60, load=40.0, per_replica=8.0) == (
        5,
        {"plan": "active", "hour": 1, "growth": 1.0, "climb": 1.0},
    )
    assert p.decide(T0 + 90 * 60, load=1.0, per_replica=8.0)[0] == 2  # the hour's floor
    assert p.decide(T0 + 90 * 60, load=400.0, per_replica=8.0)[0] == 8  # and its ceiling


def test_a_ramp_ahead_adds_replicas_and_a_fall_does_not_remove_them() -> None:
    up = plan([100.0, 200.0, 400.0], [1] * 3, [50] * 3, lead_s=1800)
    want, state = up.decide(T0 + 60 * 60, load=40.0, per_replica=8.0)
    assert state["growth"] > 1.2 and want > 5  # sized for the load half an hour on
    down = plan([400.0, 200.0, 100.0], [1] * 3, [50] * 3, lead_s=1800)
    assert down.decide(T0 + 60 * 60, load=40.0, per_replica=8.0)[0] == 5


def test_bounds_are_the_hour_the_replicas_will_run_in() -> None:
    p = plan([100.0] * 3, [1, 4, 4], [8, 8, 8], lead_s=600)
    assert p.decide(T0 + 40 * 60, load=8.0, per_replica=8.0)[0] == 1  # hour 0 until 0:50
    assert p.decide(T0 + 52 * 60, load=8.0, per_replica=8.0)[0] == 4  # replicas due at 1:02


def test_a_load_ray_could_not_measure_keeps_the_floor() -> None:
    p = plan([100.0] * 2, [3, 3], [8, 8])
    want, state = p.decide(T0 + 60, load=float("nan"), per_replica=8.0)
    assert (want, state["load"]) == (3, "missing")


def test_outside_the_plan_it_scales_on_the_load_and_says_so() -> None:
    p = plan([100.0] * 2, [4, 4], [6, 6])
    assert p.decide(T0 + 3 * 3600, load=8.0, per_replica=8.0) == (
        1,
        {"plan": "expired", "climb": 1.0},
    )
    fresh = plan([100.0] * 2, [4, 4], [6, 6])
    assert fresh.decide(T0 - 60, load=80.0, per_replica=8.0)[:1] == (10,)
    assert fresh.decide(T0 - 60, load=80.0, per_replica=8.0)[1]["plan"] == "not-started"


def test_a_climb_the_plan_did_not_know_is_extrapolated() -> None:
    p = plan([100.0] * 2, [1, 1], [50, 50], lead_s=300)
    for s in range(0, 600, 10):  # flat at 40 for ten minutes: no climb
        want, state = p.decide(T0 + s, load=40.0, per_replica=8.0)
    assert (want, state["climb"]) == (5, 1.0)
    for s in range(600, 900, 10):  # then 20 % higher for five minutes
        want, state = p.decide(T0 + s, load=48.0, per_replica=8.0)
    assert state["climb"] == pytest.approx(1.2) and want == 8  # ceil(48 × 1.2 / 8)
    idle = plan([100.0] * 2, [1, 1], [50, 50], lead_s=300)
    for s in range(0, 600, 10):  # idle, then a trickle: no climb from nothing
        want, state = idle.decide(T0 + s, load=0.0 if s < 300 else 0.2, per_replica=8.0)
    assert (want, state["climb"]) == (1, 1.0)
    q = plan([100.0] * 2, [1, 1], [50, 50], lead_s=300)
    for s in range(0, 900, 10):  # noise of ±2 % is not a climb
        want, state = q.decide(T0 + s, load=40.0 * (1.02 if s % 20 else 0.98), per_replica=8.0)
    assert state["climb"] == 1.0


def test_policy_called_by_ray_with_its_context() -> None:
    from ray.serve.config import AutoscalingConfig, AutoscalingContext

    p = plan([100.0] * 2, [2, 2], [6, 6])
    ctx = AutoscalingContext(
        deployment_id=None,
        deployment_name="FeedService",
        app_name="feedcast",
        current_num_replicas=2,
        target_num_replicas=2,
        running_replicas=[],
        total_num_requests=lambda: 36.0,
        total_queued_requests=0.0,
        aggregated_metrics={},
        raw_metrics={},
        capacity_adjusted_min_replicas=1,
        capacity_adjusted_max_replicas=10,
        policy_state={"ray_internal": 1},
        last_scale_up_time=None,
        last_scale_down_time=None,
        current_time=T0 + 1800,
        config=AutoscalingConfig(min_replicas=1, max_replicas=10, target_ongoing_requests=8),
    )
    want, state = p(ctx)
    assert want == 5  # ceil(36 / 8)
    assert state["ray_internal"] == 1 and state["feedcast"]["plan"] == "active"


def test_bad_plans_are_refused_with_the_reason() -> None:
    hours = [(START + timedelta(hours=i)).isoformat() for i in range(3)]
    with pytest.raises(ValueError, match="length"):
        ForecastPolicy(hours, [1.0, 2.0], [1, 1, 1], [2, 2, 2])
    with pytest.raises(ValueError, match="consecutive"):
        ForecastPolicy([hours[0], hours[2]], [1.0, 1.0], [1, 1], [2, 2])
    with pytest.raises(ValueError, match="min_replicas"):
        ForecastPolicy(hours, [1.0] * 3, [3, 1, 1], [2, 2, 2])
    with pytest.raises(ValueError, match="expected_rps"):
        ForecastPolicy(hours, [1.0, float("nan"), 1.0], [1] * 3, [2] * 3)


def test_load_plan_reads_what_the_planner_writes(tmp_path) -> None:
    cfg = cp.CapacityConfig(lag_min=7)
    rps = (300.0 + 100.0 * np.sin(np.arange(48) / 24 * 2 * np.pi)).tolist()
    written = cp.CapacityPlan(
        hours=[(START + timedelta(hours=i)).isoformat() for i in range(48)],
        expected_rps=rps,
        upload_workers=[1] * 48,
        days_until_full=10.0,
        config=cfg,
    )
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(written.to_dict()))
    kw = load_plan(path)
    lo, hi = cp.hourly_bounds(np.array(rps) * 3600, cfg)
    assert kw["min_replicas"] == lo.tolist() and kw["max_replicas"] == hi.tolist()
    assert kw["lead_s"] == 7 * 60 and len(kw["hours"]) == 48


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (None, "cannot read"),
        ("feed_autoscaling: []", "no 'feed_autoscaling'"),
        ("feed_autoscaling: [{hour: '2026-12-01T00:00:00+00:00'}]", "expected_rps"),
        (
            "feed_autoscaling: [{hour: '2026-12-01T00:00:00+00:00', expected_rps: 1,"
            " min_replicas: 0, max_replicas: 2}]",
            "min_replicas",
        ),
    ],
)
def test_load_plan_names_the_file_and_the_problem(tmp_path, text, match) -> None:
    path = tmp_path / "plan.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(PlanError, match=match) as err:
        load_plan(path)
    assert str(path) in str(err.value)


def test_settings_with_a_plan_give_ray_the_policy(tmp_path) -> None:
    from ray.serve.config import AutoscalingConfig

    path = tmp_path / "plan.yaml"
    rows = [
        {"hour": (START + timedelta(hours=i)).isoformat(), "expected_rps": 50.0,
         "min_replicas": 2 + i, "max_replicas": 9}
        for i in range(3)
    ]  # fmt: skip
    path.write_text(yaml.safe_dump({"feed_autoscaling": rows}))
    plain = autoscaling_config(Settings())  # Ray's rule, with the floor lease on top
    assert plain["policy"]["policy_function"] == LEASED_POLICY
    assert plain["policy"]["policy_kwargs"]["lease"]["key"].endswith(":ops:lease:feed")
    assert AutoscalingConfig(**plain).policy.policy_function == LEASED_POLICY
    config = autoscaling_config(Settings(serve_capacity_plan=path))
    assert (config["min_replicas"], config["max_replicas"]) == (2, 9)
    assert config["policy"]["policy_function"] == POLICY
    ray_config = AutoscalingConfig(**config)  # Ray imports and serialises the policy
    assert ray_config.policy.policy_function == POLICY
    assert not ray_config.policy.is_default_policy_function()


def test_a_lease_raises_the_decision_to_its_floor_and_never_lowers_it() -> None:
    class Held(FloorLease):
        def __init__(self, replicas: int) -> None:
            self.replicas = replicas

        def floor(self, now: float) -> tuple[int, str]:
            return (self.replicas, "held") if self.replicas else (0, "none")

    assert _leased(2, 0.0, Held(5), {}) == (5, {"lease": {"status": "held", "replicas": 5},
                                               "lease_raised": True})  # fmt: skip
    assert _leased(7, 0.0, Held(5), {})[0] == 7  # the maximum: a floor, not a target
    assert _leased(3, 0.0, Held(0), {}) == (3, {"lease": "none"})
    assert _leased(3, 0.0, None, {}) == (3, {})
    p = plan([20.0] * 3, [1] * 3, [6] * 3, lead_s=0.0)
    p.lease = Held(4)
    want, state = p.decide(T0 + 1800, 1.0, 8.0)  # the plan alone would keep its floor of 1
    assert want == 4 and state["lease"] == {"status": "held", "replicas": 4}


def test_a_redis_that_does_not_answer_is_no_lease_and_is_not_asked_every_tick() -> None:
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    lease = FloorLease("127.0.0.1", port, 0, "k", every_s=1.0, timeout_s=0.2, backoff_s=10.0)
    assert lease.floor(1000.0) == (0, "unreadable")
    assert lease._next == 1010.0  # skipped for the backoff, then tried again
    assert lease.floor(1005.0) == (0, "unreadable")
    assert lease._next == 1010.0


def test_a_stored_lease_counts_only_while_in_force_and_well_formed() -> None:
    import json

    from core.lease import Lease, parse

    body = {"replicas": 3, "until": 200.0, "alert": "FeedTrafficAboveBand", "granted_at": 100.0}
    assert parse(json.dumps(body), 150.0) == Lease(3, 200.0, "FeedTrafficAboveBand", 100.0)
    assert parse(json.dumps(body).encode(), 150.0) is not None
    assert parse(json.dumps(body), 200.0) is None  # expired, even if Redis still had it
    assert parse(json.dumps(body | {"replicas": 0}), 150.0) is None
    for garbled in (None, b"", b"{", json.dumps({"replicas": 3}), json.dumps([1, 2])):
        assert parse(garbled, 150.0) is None
