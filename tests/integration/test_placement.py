"""A redeploy whose replica ceilings cannot all be placed on the running Ray is refused before
anything changes: the service keeps answering from the replicas it had."""

from __future__ import annotations

import httpx
import pytest
import ray

from core.settings import DEV_API_KEY, Settings
from serving import placement
from serving.app import FEED_CPUS
from serving.deploy import NotReadyError, deploy

pytestmark = pytest.mark.integration


def _replicas() -> dict[str, int]:
    from ray import serve

    apps = serve.status().applications
    return {
        name: d.replica_states.get("RUNNING", 0)
        for app in apps.values()
        for name, d in app.deployments.items()
    }


def test_a_redeploy_past_the_clusters_cpus_is_refused_and_changes_nothing(
    settings: Settings, service: str
) -> None:
    before = _replicas()
    cpus = ray.cluster_resources()["CPU"]
    too_many = int(cpus / FEED_CPUS) + 1  # feed replicas alone past the cluster's CPUs
    with pytest.raises(placement.PlacementError, match="serve_max_replicas"):
        deploy(settings.model_copy(update={"serve_max_replicas": too_many}), address="local")
    assert _replicas() == before
    r = httpx.get(f"{service}/v1/feed/1", params={"limit": 5}, headers={"X-API-Key": DEV_API_KEY})
    assert r.status_code == 200, r.text


def test_a_deploy_whose_models_are_not_registered_is_refused_and_changes_nothing(
    settings: Settings, service: str
) -> None:
    before = _replicas()
    missing = settings.model_copy(update={"model_name": "feed_ranker_never_trained"})
    with pytest.raises(NotReadyError, match=r"feed_ranker_never_trained.*feedcast train"):
        deploy(missing, address="local")
    assert _replicas() == before
