"""Cassandra connection with explicit timeouts, load balancing and retries."""

from __future__ import annotations

from typing import Any

from cassandra import ConsistencyLevel
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, Session
from cassandra.policies import (
    DCAwareRoundRobinPolicy,
    ExponentialReconnectionPolicy,
    RetryPolicy,
    TokenAwarePolicy,
)
from cassandra.query import tuple_factory

from core.settings import Settings

# The hot path's profile: rows as plain tuples. The default named-tuple rows build a namedtuple
# class for every result set (~0.1 ms each), which a feed request reading ~15 partitions pays
# every time. Statements read with it are indexed by column position.
TUPLES = "tuples"


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

    def profile(**kw: Any) -> ExecutionProfile:
        return ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(
                DCAwareRoundRobinPolicy(local_dc=settings.cassandra_local_dc)
            ),
            retry_policy=RetryPolicy(),
            consistency_level=consistency(settings.cassandra_read_consistency),
            request_timeout=settings.cassandra_request_timeout_s,
            **kw,  # row_factory for the hot path
        )

    cluster = Cluster(
        contact_points=settings.cassandra_hosts,
        port=settings.cassandra_port,
        execution_profiles={
            EXEC_PROFILE_DEFAULT: profile(),
            TUPLES: profile(row_factory=tuple_factory),
        },
        reconnection_policy=ExponentialReconnectionPolicy(base_delay=0.5, max_delay=10.0),
        connect_timeout=connect_timeout_s or settings.cassandra_connect_timeout_s,
        control_connection_timeout=connect_timeout_s or settings.cassandra_connect_timeout_s,
        protocol_version=5,
    )
    ks = settings.cassandra_keyspace if keyspace == "" else keyspace
    session = cluster.connect(ks) if ks else cluster.connect()
    return cluster, session
