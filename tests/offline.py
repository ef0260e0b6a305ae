"""The guard of the tiers that need no service (tests/unit, tests/model).

While such a test runs, a TCP connection from this process to one of the stack's ports on
loopback fails the test at once, with the test's id, the port and the component it belongs to.
The ports are read from :class:`Settings` (every ``*_port`` field's default, the default MLflow
URI's port, and the values the ``FEEDCAST_*`` environment sets), plus Ray's dashboard and the
integration suite's own Redis and Serve ports.

The check sits in ``socket.socket.connect``/``connect_ex``, which ``socket.create_connection``,
asyncio, httpx, redis-py and the Cassandra driver all go through. What it cannot see: native
code opening its own sockets (Ray's gRPC core) and other processes; the tiers it guards start
no Ray and run no client in a subprocess. Threads already running when the test started (a session
fixture's, in a run that mixes tiers) are not the test's doing and pass through.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import pytest

from core.settings import Settings
from tests.integration.suite import TEST_REDIS_PORT, TEST_SERVE_PORT

RAY_DASHBOARD_PORT = 8265  # Ray's default; the stack's head runs without it, `ray start` has it


def stack_ports() -> dict[int, str]:
    """Port → what listens there in the local stack (or the integration suite's stack)."""
    ports: dict[int, str] = {
        RAY_DASHBOARD_PORT: "the Ray dashboard (Ray's default port)",
        TEST_REDIS_PORT: "the integration suite's Redis",
        TEST_SERVE_PORT: "the integration suite's Ray Serve HTTP",
    }
    fields = Settings.model_fields
    tracking = urlsplit(str(fields["mlflow_tracking_uri"].default)).port
    if tracking is not None:
        ports[tracking] = "mlflow_tracking_uri"
    for name, field in fields.items():
        if name.endswith("_port") and isinstance(field.default, int):
            ports[field.default] = name
    try:
        env = Settings()  # FEEDCAST_* may move a port; the guard follows it
    except ValueError:  # a malformed FEEDCAST_* value: some test checks that it is refused
        env = None
    if env is not None:
        for name in fields:
            value = getattr(env, name)
            if name.endswith("_port") and isinstance(value, int):
                ports.setdefault(value, f"{name} (from FEEDCAST_{name.upper()})")
    return ports


def _loopback(host: object) -> bool:
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    if host == "" or host.lower().rstrip(".").endswith("localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return ip.is_loopback or ip.is_unspecified  # connecting to 0.0.0.0 reaches this host


class Guard:
    """Refuses connections to the stack's ports for one test (see the module docstring)."""

    def __init__(self, test: str, ports: dict[int, str]) -> None:
        self.test, self.ports = test, ports
        self.seen: list[str] = []
        main = threading.main_thread()
        self._before = {t for t in threading.enumerate() if t is not main}

    def check(self, address: object) -> None:
        if not (isinstance(address, tuple) and len(address) >= 2):
            return  # AF_UNIX paths and the like: not a stack port
        host, port = address[0], address[1]
        if port not in self.ports or not _loopback(host):
            return
        if threading.current_thread() in self._before:
            return  # a thread that predates the test (a session fixture's), not the test's
        message = (
            f"{self.test} connected to {host}:{port} ({self.ports[port]}): tests here need "
            "no service; a test that does belongs in tests/integration"
        )
        self.seen.append(message)
        pytest.fail(message, pytrace=True)


@contextmanager
def refusing_stack_connections(test: str) -> Iterator[Guard]:
    """Patch ``socket.socket.connect``/``connect_ex`` while ``test`` runs; fail it on a stack port.

    The failure is raised where the connection is made (``pytest.fail``: not an ``OSError``, so
    no client library takes it for a service that is down and carries on) and again on exit,
    for a connection made in a thread or behind a broad ``except``.
    """
    guard = Guard(test, stack_ports())
    connect, connect_ex = socket.socket.connect, socket.socket.connect_ex

    def guarded_connect(sock: socket.socket, address: object) -> None:
        guard.check(address)
        return connect(sock, address)

    def guarded_connect_ex(sock: socket.socket, address: object) -> int:
        guard.check(address)
        return connect_ex(sock, address)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", guarded_connect)
        mp.setattr(socket.socket, "connect_ex", guarded_connect_ex)
        yield guard
    if guard.seen:
        pytest.fail("\n".join(guard.seen), pytrace=False)
