"""Integration fixtures: the real local stack, a small world in a keyspace of its own.

Everything a run creates is named with a unique suffix (keyspace, Feast project, registered
model, experiment) and removed at the end, so the suite never touches the demo's data.
"""

from __future__ import annotations

import socket
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime

import pytest

from core.settings import Settings

TEST_SERVE_PORT = 8011
# The suite's own Redis (beside a demo's on 6379): degraded-mode tests stop and restart it.
TEST_REDIS_PORT = 6390
# A second API key with a bucket of its own, for the tests that exhaust a rate limit.
LIMITED_KEY = "feedcast-test-limited-key"
# The schemathesis run's key: its pacing against the limit must not depend on other tests.
FUZZ_KEY = "feedcast-test-fuzz-key"
TEST_RATE_PER_S = 20
# The overload test's key, and the small queue it overflows.
OVERLOAD_KEY = "feedcast-test-overload-key"


def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports nothing listens on now.

    The suite's media origin reads the session's own keyspace, so it cannot be shared: each
    session runs its own origin and edge (pid files and cache named by port) on ports of its
    own, and two sessions at once never serve each other's posts.
    """
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


@pytest.fixture(scope="session")
def run_id() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def settings(run_id: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    from core.settings import DEV_API_KEY_HASH
    from serving.security import hash_key
    from stack import local

    origin_port, edge_port, gate_port = free_ports(3)
    s = Settings(
        env="test",
        redis_port=TEST_REDIS_PORT,
        api_key_hashes=[
            DEV_API_KEY_HASH,
            hash_key(LIMITED_KEY),
            hash_key(FUZZ_KEY),
            hash_key(OVERLOAD_KEY),
        ],
        serve_max_ongoing_requests=4,
        serve_max_queued_requests=4,
        rate_limit_per_s=TEST_RATE_PER_S,
        rate_limit_burst=40,
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
    for name in (s.model_name, s.heavy_model_name):
        if client.search_registered_models(filter_string=f"name = '{name}'"):
            client.delete_registered_model(name)
    exp = client.get_experiment_by_name(s.experiment)
    if exp is not None:
        client.delete_experiment(exp.experiment_id)


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
def service(settings: Settings, trained) -> str:
    import ray
    from ray import serve

    from serving.deploy import deploy

    url = deploy(settings, address="local")
    yield url
    serve.shutdown()
    ray.shutdown()
