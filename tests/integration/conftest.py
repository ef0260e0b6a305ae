"""Integration fixtures: the real local stack, a small world in a keyspace of its own.

Everything a run creates is named with a unique suffix (keyspace, Feast project, registered
model, experiment) and removed at the end, so the suite never touches the demo's data. Only
tests under this folder can ask for these fixtures: tests/unit and tests/model run with no
service at all.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import httpx
import pytest

from core.settings import Settings
from tests.integration.suite import (
    FUZZ_KEY,
    LIMITED_KEY,
    OVERLOAD_KEY,
    TEST_RATE_PER_S,
    TEST_REDIS_PORT,
    TEST_SERVE_PORT,
    free_ports,
)
from tests.waiting import wait_until


@pytest.fixture(scope="session")
def run_id() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def settings(run_id: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    from core.settings import DEV_API_KEY_HASH
    from serving.security import hash_key
    from stack import local

    ports = free_ports(9)
    origin_port, edge_port, gate_port, prometheus_port, alertmanager_port = ports[:5]
    metrics_port, responder_port, redis_exporter_port, mtail_port = ports[5:]
    s = Settings(
        env="test",
        redis_port=TEST_REDIS_PORT,
        api_key_hashes=[
            DEV_API_KEY_HASH,
            hash_key(LIMITED_KEY),
            hash_key(FUZZ_KEY),
            hash_key(OVERLOAD_KEY),
        ],
        # Tests serve the same users' pages seconds apart and count each warm attempt.
        prefetch_requeue_s=0.0,
        serve_max_ongoing_requests=4,
        serve_max_queued_requests=4,
        rate_limit_per_s=TEST_RATE_PER_S,
        rate_limit_burst=40,
        # The fuzzer's uploads stay under the quota (its own test fills the counter); the
        # sweeper looks every 2 s so that a swept job is not a minute's wait.
        upload_quota_per_hour=100_000,
        upload_sweep_s=2.0,
        upload_lease_s=10.0,  # a killed worker's job is taken again within seconds
        takedown_grace_s=6.0,  # a taken-down post's blobs are deleted within the test
        cassandra_keyspace=f"feedcast_test_{run_id}",
        feast_project=f"test_{run_id}",
        model_name=f"feed_ranker_test_{run_id}",
        heavy_model_name=f"feed_ranker_heavy_test_{run_id}",
        experiment=f"feedcast-test-{run_id}",
        data_dir=tmp_path_factory.mktemp("data"),
        serve_port=TEST_SERVE_PORT,
        origin_port=origin_port,
        edge_port=edge_port,
        gate_port=gate_port,
        prometheus_port=prometheus_port,
        alertmanager_port=alertmanager_port,
        ray_metrics_port=metrics_port,
        responder_port=responder_port,
        redis_exporter_port=redis_exporter_port,
        mtail_port=mtail_port,
        monitoring_scrape_s=1.0,  # the monitoring test waits for series and rules
        # Alerts' `for` at a tenth (the band alert holds 12 s, not 2 min); the band's plan
        # is written by the test that needs it; its lease lapses within the test.
        monitoring_for_scale=0.1,
        monitoring_band_plan=tmp_path_factory.mktemp("ops") / "band_plan.yaml",
        responder_lease_s=45.0,
        responder_rewarm_window_min=240,  # the small world's habits: some users in the window
    )
    # Idempotent: what already runs (a demo's stack, say) is used as it is; what this session
    # starts, it stops at the end, so a test run leaves nothing behind.
    started = local.up(s, report=lambda _: None)
    yield s
    try:
        _cleanup(s)
    finally:
        local.stop(s, started)


def _cleanup(s: Settings) -> None:
    from mlflow import MlflowClient

    from core.db import connect

    cluster, session = connect(s, keyspace=None)
    try:
        session.execute(f"DROP KEYSPACE IF EXISTS {s.cassandra_keyspace}", timeout=60)
    finally:
        cluster.shutdown()
    if (s.feast_dir / "registry.db").exists():
        from features.store import open_store

        open_store(s).teardown()
    client = MlflowClient(s.mlflow_tracking_uri, s.mlflow_tracking_uri)
    _delete_models(client, s.model_name, s.heavy_model_name)
    exp = client.get_experiment_by_name(s.experiment)
    if exp is not None:
        client.delete_experiment(exp.experiment_id)


def _delete_models(client, *names: str) -> None:
    for name in names:
        if client.search_registered_models(filter_string=f"name = '{name}'"):
            client.delete_registered_model(name)


@pytest.fixture(scope="session")
def world(settings: Settings):
    from pipelines.steps import generate_world
    from simulator.config import WorldConfig

    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    # The last 1.5 days are held back: the retraining tests serve them as new traffic.
    world, _ = generate_world(
        settings, WorldConfig(users=300, days=6, seed=11, end=end), hold_back_days=1.5
    )
    return world


@pytest.fixture(scope="session")
def trained(settings: Settings, world):
    from pipelines.steps import features_apply, features_materialize, train
    from training.heavy import HeavyParams

    features_apply(settings)
    features_materialize(settings)
    return train(settings, heavy_params=HeavyParams(epochs=30))


@pytest.fixture(scope="session")
def service(settings: Settings, trained) -> Iterator[str]:
    import ray
    from ray import serve

    from serving.deploy import deploy

    url = deploy(settings, address="local")
    yield url
    serve.shutdown()
    ray.shutdown()


# -- models of a test's own: a test that moves @champion never moves the session's ---------------


def champion_label(s: Settings) -> str:
    """The pair ``@champion`` names for ``s``, as the service labels it (serving.model)."""
    from mlflow import MlflowClient

    client = MlflowClient(s.mlflow_tracking_uri, s.mlflow_tracking_uri)
    light = client.get_model_version_by_alias(s.model_name, s.model_alias)
    heavy = client.get_model_version_by_alias(s.heavy_model_name, s.model_alias)
    return f"{s.model_name}/{light.version}+{s.heavy_model_name}/{heavy.version}"


@contextmanager
def own_models(settings: Settings, suffix: str) -> Iterator[Settings]:
    """``settings`` with registered models of the caller's own, deleted on exit.

    Each starts as a copy of the session's champion (same run, same artifacts: no training), so
    a test can move ``@champion`` freely; the session's champion, which the other tests serve
    and assert, never moves, whatever order the tests run in.
    """
    from mlflow import MlflowClient

    own = settings.model_copy(
        update={
            "model_name": f"{settings.model_name}_{suffix}",
            "heavy_model_name": f"{settings.heavy_model_name}_{suffix}",
        }
    )
    client = MlflowClient(settings.mlflow_tracking_uri, settings.mlflow_tracking_uri)
    try:
        for src, dst in (
            (settings.model_name, own.model_name),
            (settings.heavy_model_name, own.heavy_model_name),
        ):
            copy = client.copy_model_version(f"models:/{src}@{settings.model_alias}", dst)
            client.set_registered_model_alias(dst, own.model_alias, copy.version)
        yield own
    finally:
        _delete_models(client, own.model_name, own.heavy_model_name)


def _serves(url: str, label: str) -> bool:
    """Five answers in a row from the pair ``label`` (every replica, old ones gone)."""
    try:
        return all(
            httpx.get(f"{url}/healthz", timeout=5).json().get("model_version") == label
            for _ in range(5)
        )
    except httpx.HTTPError:
        return False


@contextmanager
def served_as(settings: Settings, s: Settings) -> Iterator[str]:
    """The session's feed app redeployed with ``s`` (its own models) until exit, then with the
    session's ``settings`` again; each time it waits until every answer comes from the pair
    the settings' ``@champion`` names."""
    from serving.deploy import deploy

    url = deploy(s, address="local")
    try:
        label = champion_label(s)
        wait_until(lambda: _serves(url, label), timeout=120, what=f"the service to serve {label}")
        yield url
    finally:
        deploy(settings, address="local")
        label = champion_label(settings)
        wait_until(lambda: _serves(url, label), timeout=120, what=f"the service back on {label}")
