"""The media origin (``prefetch/origin.py``) as a stack process: uvicorn on 127.0.0.1.

The origin reads posts from the keyspace of the settings that start it, so it gets those
settings through its environment; a test run starts its own origin on its own port (and pid
file) beside a demo's.
"""

from __future__ import annotations

import sys

import httpx

from core.settings import REPO_ROOT, Settings
from stack import proc

NAME = "origin"
DEFAULT_PORT = 8089
# Longer than the edge's upstream keepalive_timeout (20 s): the edge closes an idle connection
# first, so it never reuses one the origin is closing at that moment.
KEEPALIVE_S = 30


def name(settings: Settings) -> str:
    """Pid-file name: one origin per port (the test suite runs its own beside the demo's)."""
    return NAME if settings.origin_port == DEFAULT_PORT else f"{NAME}-{settings.origin_port}"


def url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.origin_port}"


def answers(settings: Settings) -> bool:
    return health_says(url(settings), "feedcast-origin")


def health_says(base_url: str, marker: str) -> bool:
    """True when ``GET <base_url>/health`` answers 200 with ``marker`` in its body: our server,
    not some other program that holds the port. (The edge checks itself the same way.)"""
    try:
        r = httpx.get(f"{base_url}/health", timeout=2.0)
    except httpx.HTTPError:
        return False
    return r.status_code == 200 and marker in r.text


def env(settings: Settings) -> dict[str, str]:
    """The settings the origin reads, as ``FEEDCAST_*`` variables (they win over inherited ones)."""
    return {
        "FEEDCAST_CASSANDRA_HOSTS": ",".join(settings.cassandra_hosts),
        "FEEDCAST_CASSANDRA_PORT": str(settings.cassandra_port),
        "FEEDCAST_CASSANDRA_KEYSPACE": settings.cassandra_keyspace,
        "FEEDCAST_CASSANDRA_LOCAL_DC": settings.cassandra_local_dc,
        "FEEDCAST_CASSANDRA_READ_CONSISTENCY": settings.cassandra_read_consistency,
        "FEEDCAST_CASSANDRA_REQUEST_TIMEOUT_S": str(settings.cassandra_request_timeout_s),
        "FEEDCAST_CASSANDRA_CONNECT_TIMEOUT_S": str(settings.cassandra_connect_timeout_s),
        "FEEDCAST_MEDIA_SCALE": str(settings.media_scale),
        "FEEDCAST_BLOB_URL": settings.blob_store_url,
        "FEEDCAST_ORIGIN_PORT": str(settings.origin_port),
    }


def argv(settings: Settings) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "media.origin:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(settings.origin_port),
        "--workers",
        "1",  # one process: /stats counts everything this origin served
        "--timeout-keep-alive",
        str(KEEPALIVE_S),
        "--no-access-log",  # the edge's access log records every request that reaches here
        "--log-level",
        "warning",
    ]


def up(settings: Settings) -> str:
    if proc.read_pid(settings.stack_dir, name(settings)) is not None:
        return "already running"
    if answers(settings):
        return f"reusing the origin already on port {settings.origin_port}"
    pid = proc.launch(
        settings.stack_dir,
        name(settings),
        argv(settings),
        answers=lambda: answers(settings),
        what="media origin",
        env=env(settings),
        cwd=REPO_ROOT,
    )
    return f"started (pid {pid}) at {url(settings)}"


def down(settings: Settings) -> bool:
    return proc.stop(settings.stack_dir, name(settings), grace_s=10)
