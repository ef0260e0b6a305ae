"""Cassandra connection with explicit timeouts, load balancing and retries."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from cassandra import ConsistencyLevel
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, Session
from cassandra.policies import (
    DCAwareRoundRobinPolicy,
    ExponentialReconnectionPolicy,
    RetryPolicy,
    TokenAwarePolicy,
)
from cassandra.query import tuple_factory

from core.breaker import Breaker
from core.settings import Settings

T = TypeVar("T")

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


class Lazy(Generic[T]):
    """A connection made on first use, with what is built on it (``build(cluster, session)``):
    a replica starts while Cassandra is down and serves what does not need it. While Cassandra
    is unreachable, ``breaker`` lets one try through per interval and the rest fail at once
    (:class:`ConnectionError`, a 503 at the route)."""

    def __init__(
        self,
        settings: Settings,
        build: Callable[[Cluster, Session], T],
        breaker: Breaker,
        connect_timeout_s: float = 1.0,
    ) -> None:
        self.s, self._build, self._breaker = settings, build, breaker
        self._connect_timeout_s = connect_timeout_s
        self._lock = threading.Lock()
        self._made: T | None = None

    def get(self) -> T:
        with self._lock:
            if self._made is None:
                if not self._breaker.acquire():
                    raise ConnectionError("Cassandra unreachable (retrying shortly)")
                try:
                    cluster, session = connect(self.s, connect_timeout_s=self._connect_timeout_s)
                    self._made = self._build(cluster, session)
                except Exception:
                    self._breaker.failure()
                    raise
                self._breaker.success()
            return self._made
