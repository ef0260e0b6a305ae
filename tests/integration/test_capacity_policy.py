"""The capacity plan's policy inside a real Ray Serve controller: it keeps the hour's floor."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from core.settings import Settings
from serving.app import autoscaling_config
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


def _running(app: str, deployment: str) -> int:
    from ray import serve

    status = serve.status().applications.get(app)
    if status is None or deployment not in status.deployments:
        return 0
    return int(status.deployments[deployment].replica_states.get("RUNNING", 0))


def test_plan_policy_holds_the_current_hours_floor(service, tmp_path) -> None:
    from ray import serve

    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    # The hour before and the one after next allow one replica; this hour and the next ask
    # for two. The deployment's own floor is the plan's lowest (1): only the policy can
    # raise it to 2 while nothing is asked of the probe.
    mins = [1, 2, 2, 1]
    rows = [
        {"hour": (hour + timedelta(hours=i - 1)).isoformat(), "expected_rps": 5.0,
         "min_replicas": m, "max_replicas": 3}
        for i, m in enumerate(mins)
    ]  # fmt: skip
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump({"config": {"lag_min": 1}, "feed_autoscaling": rows}))
    config = autoscaling_config(Settings(serve_capacity_plan=path))
    assert config["min_replicas"] == 1
    config |= {"downscale_delay_s": 1}  # a fall back to the deployment's floor would show

    @serve.deployment(ray_actor_options={"num_cpus": 0})
    class Probe:
        def __call__(self, request: object) -> str:
            return "ok"

    serve.run(
        Probe.options(autoscaling_config=config).bind(),
        name="plan-probe",
        route_prefix="/plan-probe",
        blocking=False,
    )
    try:
        wait_until(
            lambda: _running("plan-probe", "Probe") >= 2,
            timeout=90,
            interval=0.5,
            what="the plan's floor of 2 replicas",
        )
        assert _running("plan-probe", "Probe") == 2
        # Not a wait for a condition: the time passing is what is tested (six downscale delays
        # in which the controller could fall back to the deployment's floor of 1, and doesn't).
        time.sleep(6)  # and it stays there: neither the ceiling nor the deployment's floor
        assert _running("plan-probe", "Probe") == 2
    finally:
        serve.delete("plan-probe")
