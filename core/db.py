"""Cassandra connection with explicit timeouts, load balancing and retries."""

from __future__ import annotations

from cassandra import ConsistencyLevel
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, Session
from cassandra.policies import (
    DCAwareRoundRobinPolicy,
    ExponentialReconnectionPolicy,
    RetryPolicy,
    TokenAwarePolicy,
)

from core.settings import Settings


def consistency(name: str) -> int:
    return int(getattr(ConsistencyLevel, name))


def connect(
    settings: Settings, *, keyspace: str | None = "", connect_timeout_s: float | None = None
) -> tuple[Cluster, Session]:
    """A cluster and session for ``settings``.

    ``keyspace=""`` uses the configured keyspace; ``None`` connects without one (schema setup).
    The driver's defaults (10 s per request, reconnect back-off up to 600 s) are replaced: a feed
    request cannot wait that long, and a node back from a restart must be used again quickly.
    """
    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(
            DCAwareRoundRobinPolicy(local_dc=settings.cassandra_local_dc)
        ),
        retry_policy=RetryPolicy(),
        consistency_level=consistency(settings.cassandra_read_consistency),
        request_timeout=settings.cassandra_request_timeout_s,
    )
    cluster = Cluster(
        contact_points=settings.cassandra_hosts,
        port=settings.cassandra_port,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        reconnection_policy=ExponentialReconnectionPolicy(base_delay=0.5, max_delay=10.0),
        connect_timeout=connect_timeout_s or settings.cassandra_connect_timeout_s,
        control_connection_timeout=connect_timeout_s or settings.cassandra_connect_timeout_s,
        protocol_version=5,
    )
    ks = settings.cassandra_keyspace if keyspace == "" else keyspace
    session = cluster.connect(ks) if ks else cluster.connect()
    return cluster, session
