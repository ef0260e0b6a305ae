"""Redis from Debian's ``redis-server``, or the one already answering on the configured port."""

from __future__ import annotations

import shutil

import redis

from core.settings import Settings
from stack import proc

NAME = "redis"


def name(settings: Settings) -> str:
    """Pid-file name: one Redis per port (the test suite runs its own beside the demo's)."""
    return NAME if settings.redis_port == 6379 else f"{NAME}-{settings.redis_port}"


def answers(settings: Settings) -> bool:
    client = redis.Redis(
        host=settings.redis_host,
        port=settings.redis_port,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
    )
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def ensure_installed() -> str:
    return proc.apt_install(lambda: shutil.which("redis-server"), "redis-server", "redis-server")


def up(settings: Settings) -> str:
    if proc.read_pid(settings.stack_dir, name(settings)) is not None:
        return "already running"
    if answers(settings):
        return f"reusing the Redis already on port {settings.redis_port}"
    binary = ensure_installed()
    data = settings.stack_dir / name(settings)
    data.mkdir(parents=True, exist_ok=True)
    argv = [
        binary,
        "--bind",
        settings.redis_host,
        "--port",
        str(settings.redis_port),
        "--dir",
        str(data),
        "--daemonize",
        "no",
        "--protected-mode",
        "yes",
        "--save",
        "300 1",
        "--appendonly",
        "no",
        # Bounded: past the cap, keys with a TTL (feed sessions, cached pages, scroll counts)
        # are evicted least recently used first; Feast's rows (no TTL) never are.
        "--maxmemory",
        f"{settings.redis_maxmemory_mb}mb",
        "--maxmemory-policy",
        "volatile-lru",
    ]
    pid = proc.launch(
        settings.stack_dir, name(settings), argv, answers=lambda: answers(settings), what="Redis"
    )
    return f"started (pid {pid})"


def down(settings: Settings) -> bool:
    return proc.stop(settings.stack_dir, name(settings))
