"""The capacity plan for the upload tier: the floor policy, the plan file, the storage forecast."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import yaml

from capacity import plan as cp
from media.storage import days_until_full_now, upcoming_uploads
from serving.autoscaling import (
    UPLOAD_POLICY,
    PlanError,
    UploadFloorPolicy,
    load_upload_plan,
    upload_autoscaling,
)

START = datetime(2026, 12, 1, tzinfo=UTC)
T0 = START.timestamp()


def hours(n: int) -> list[str]:
    return [(START + timedelta(hours=i)).isoformat() for i in range(n)]


def floor_plan(workers: list[int], lead_s: float = 300.0, cap: int | None = None):
    return UploadFloorPolicy(hours(len(workers)), workers, lead_s=lead_s, max_replicas=cap)


def test_the_hours_floor_holds_at_zero_load() -> None:
    p = floor_plan([3, 3, 3])
    assert p.decide(T0 + 90 * 60, load=0.0, per_replica=1.0) == (
        3,
        {"plan": "active", "hour": 1, "floor": 3, "clipped": False},
    )


def test_a_load_above_the_floor_scales_past_it() -> None:
    p = floor_plan([3, 3, 3], cap=20)
    assert p.decide(T0 + 90 * 60, load=7.0, per_replica=1.0)[0] == 7
    assert p.decide(T0 + 90 * 60, load=7.0, per_replica=2.0)[0] == 4  # ceil(7 / 2)
    assert p.decide(T0 + 90 * 60, load=50.0, per_replica=1.0)[0] == 20  # the deployment's max


def test_a_floor_above_the_max_is_clipped_and_the_state_says_so() -> None:
    p = floor_plan([8, 8], cap=5)
    want, state = p.decide(T0 + 60, load=0.0, per_replica=1.0)
    assert want == 5
    assert state["floor"] == 8 and state["clipped"] is True


def test_the_floor_is_that_of_the_hour_lead_s_ahead() -> None:
    p = floor_plan([1, 6, 2], lead_s=600)
    assert p.decide(T0 + 40 * 60, load=0.0, per_replica=1.0)[0] == 1  # hour 0 until 0:50
    want, state = p.decide(T0 + 52 * 60, load=0.0, per_replica=1.0)  # workers due at 1:02
    assert (want, state["hour"], state["floor"]) == (6, 0, 6)
    assert p.decide(T0 + 2 * 3600 + 55 * 60, load=0.0, per_replica=1.0)[0] == 2  # last hour


def test_a_load_ray_could_not_measure_keeps_the_floor() -> None:
    want, state = floor_plan([4, 4]).decide(T0 + 60, load=float("nan"), per_replica=1.0)
    assert (want, state["load"]) == (4, "missing")


def test_outside_the_plan_it_scales_on_the_load_alone_and_says_so() -> None:
    p = floor_plan([5, 5], cap=10)
    assert p.decide(T0 + 3 * 3600, load=2.0, per_replica=1.0) == (2, {"plan": "expired"})
    assert p.decide(T0 - 3600, load=0.0, per_replica=1.0) == (0, {"plan": "not-started"})
    assert p.decide(T0 - 3600, load=30.0, per_replica=1.0)[0] == 10  # still under the max


def test_policy_called_by_ray_with_its_context() -> None:
    from ray.serve.config import AutoscalingConfig, AutoscalingContext

    p = floor_plan([2, 2], cap=6)
    ctx = AutoscalingContext(
        deployment_id=None,
        deployment_name="UploadWorker",
        app_name="feedcast-uploads",
        current_num_replicas=2,
        target_num_replicas=2,
        running_replicas=[],
        total_num_requests=lambda: 3.0,
        total_queued_requests=0.0,
        aggregated_metrics={},
        raw_metrics={},
        capacity_adjusted_min_replicas=1,
        capacity_adjusted_max_replicas=6,
        policy_state={"ray_internal": 1},
        last_scale_up_time=None,
        last_scale_down_time=None,
        current_time=T0 + 1800,
        config=AutoscalingConfig(min_replicas=1, max_replicas=6, target_ongoing_requests=1),
    )
    want, state = p(ctx)
    assert want == 3
    assert state["ray_internal"] == 1 and state["feedcast"]["plan"] == "active"


def test_bad_upload_plans_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="length"):
        UploadFloorPolicy(hours(3), [1, 1])
    with pytest.raises(ValueError, match="consecutive"):
        UploadFloorPolicy([hours(3)[0], hours(3)[2]], [1, 1])
    with pytest.raises(ValueError, match="workers"):
        UploadFloorPolicy(hours(2), [1, -1])
    with pytest.raises(ValueError, match="expected_uploads"):
        UploadFloorPolicy(hours(2), [1, 1], expected_uploads=[1.0, float("nan")])


def test_a_schedule_without_upload_rows_has_no_upload_plan(tmp_path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump({"feed_autoscaling": [{"hour": hours(1)[0]}]}))
    assert load_upload_plan(path) is None
    path.write_text("upload_workers: []")
    assert load_upload_plan(path) is None


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (None, "cannot read"),
        ("upload_workers: 3", "not a list"),
        ("upload_workers: [{hour: '2026-12-01T00:00:00+00:00'}]", "workers"),
        ("upload_workers: [{hour: '2026-12-01T00:00:00+00:00', workers: many}]", "workers"),
        ("upload_workers: [{hour: '2026-12-01T00:00:00+00:00', workers: -2}]", "≥ 0"),
        (
            "upload_workers: [{hour: '2026-12-01T00:00:00+00:00', workers: 1},"
            " {hour: '2026-12-01T05:00:00+00:00', workers: 1}]",
            "consecutive",
        ),
    ],
)
def test_load_upload_plan_names_the_file_and_the_problem(tmp_path, text, match) -> None:
    path = tmp_path / "plan.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(PlanError, match=match) as err:
        load_upload_plan(path)
    assert str(path) in str(err.value)


def test_an_old_schedule_without_expected_uploads_still_gives_the_floor(tmp_path) -> None:
    path = tmp_path / "plan.yaml"
    rows = [{"hour": h, "workers": 2} for h in hours(3)]
    path.write_text(yaml.safe_dump({"config": {"lag_min": 2}, "upload_workers": rows}))
    kw = load_upload_plan(path)
    assert kw == {"hours": hours(3), "workers": [2, 2, 2], "lead_s": 120.0}
    assert len(upcoming_uploads(kw, T0)) == 0
    assert math.isnan(days_until_full_now(1e9, 1e12, upcoming_uploads(kw, T0), 1e6))


def test_the_planners_schedule_round_trips_to_the_upload_policy(tmp_path) -> None:
    cfg = cp.CapacityConfig(lag_min=7, upload_worker_per_h=1000.0)
    uploads = np.array([500.0, 1500.0, 4200.0, 800.0])
    growth = uploads * 2e6
    written = cp.CapacityPlan(
        hours=hours(4),
        expected_rps=[50.0] * 4,
        upload_workers=cp.upload_workers(uploads, cfg).tolist(),
        days_until_full=cp.days_until_full(0.0, growth, cfg.storage_capacity_bytes),
        config=cfg,
        expected_uploads=uploads.tolist(),
        bytes_per_post=cp.stored_bytes_per_post(uploads, growth),
    )
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(written.to_dict()))
    kw = load_upload_plan(path)
    assert kw is not None
    assert kw["workers"] == written.upload_workers == [1, 3, 5, 3]  # halfway to a busier hour
    assert kw["expected_uploads"] == uploads.tolist()
    assert kw["bytes_per_post"] == pytest.approx(2e6)
    assert kw["lead_s"] == 7 * 60 and kw["hours"] == hours(4)
    assert upcoming_uploads(kw, T0 + 2.5 * 3600).tolist() == [4200.0, 800.0]
    assert upcoming_uploads(yaml.safe_load(path.read_text())["upload_workers"], T0).tolist() == (
        uploads.tolist()
    )


def test_upload_autoscaling_gives_ray_the_floor_policy(tmp_path) -> None:
    from ray.serve.config import AutoscalingConfig

    plain = upload_autoscaling(1, 4, None)
    assert plain == {
        "min_replicas": 1,
        "max_replicas": 4,
        "target_ongoing_requests": 1,
        "upscale_delay_s": 5,
        "downscale_delay_s": 120,
    }
    kw = {"hours": hours(3), "workers": [6, 2, 9], "lead_s": 300.0}
    config = upload_autoscaling(0, 5, kw)
    assert (config["min_replicas"], config["max_replicas"]) == (2, 5)
    assert config["policy"]["policy_function"] == UPLOAD_POLICY
    assert config["policy"]["policy_kwargs"]["max_replicas"] == 5
    assert upload_autoscaling(3, 5, kw)["min_replicas"] == 3  # the settings' min holds
    ray_config = AutoscalingConfig(**config)  # Ray imports and serialises the policy
    assert ray_config.policy.policy_function == UPLOAD_POLICY
    assert not ray_config.policy.is_default_policy_function()
    policy = UploadFloorPolicy(**config["policy"]["policy_kwargs"])
    assert policy.decide(T0 + 2 * 3600 + 60, 0.0, 1.0) == (
        5,
        {"plan": "active", "hour": 2, "floor": 9, "clipped": True},
    )


def test_days_until_full_now_on_simple_numbers() -> None:
    # 10 GB stored of 100 GB, 1000 uploads/h of 1 MB: 1 GB/h, 90 hours to go
    assert days_until_full_now(10e9, 100e9, [1000.0] * 168, 1e6) == (90e9 / 1e9) / 24
    assert days_until_full_now(10e9, 100e9, [1000.0] * 24, 1e6) == (90e9 / 1e9) / 24  # extended
    assert days_until_full_now(100e9, 100e9, [1000.0] * 24, 1e6) == 0.0
    assert days_until_full_now(10e9, 100e9, [0.0] * 24, 1e6) == math.inf
    with pytest.raises(ValueError, match="bytes_per_post"):
        days_until_full_now(10e9, 100e9, [1000.0], -1.0)


def test_upcoming_uploads_are_the_plans_hours_from_now_on() -> None:
    kw = {"hours": hours(3), "expected_uploads": [10.0, 20.0, 30.0]}
    assert upcoming_uploads(kw, T0 - 7200).tolist() == [10.0, 20.0, 30.0]  # before: the plan
    assert upcoming_uploads(kw, T0 + 3599).tolist() == [10.0, 20.0, 30.0]
    assert upcoming_uploads(kw, T0 + 3600).tolist() == [20.0, 30.0]
    assert upcoming_uploads(kw, T0 + 3 * 3600).tolist() == []  # past the plan
