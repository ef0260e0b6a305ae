"""Redis from Debian's ``redis-server``, or the one already answering on the configured port."""

from __future__ import annotations

import os
import shutil
import subprocess

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
    path = shutil.which("redis-server")
    if path:
        return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        for cmd in (
            ["apt-get", "update", "-q"],
            ["apt-get", "install", "-y", "-q", "redis-server"],
        ):
            subprocess.run(cmd, capture_output=True, timeout=600, check=False)
        path = shutil.which("redis-server")
    if not path:
        raise proc.StackError("redis-server not found: install it (apt-get install redis-server)")
    return path


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
    ]
    pid = proc.start(settings.stack_dir, name(settings), argv)
    proc.wait_until(
        lambda: answers(settings),
        timeout_s=30,
        what="Redis",
        log=settings.stack_dir / "logs" / f"{name(settings)}.log",
        alive=lambda: proc.read_pid(settings.stack_dir, name(settings)) == pid,
    )
    return f"started (pid {pid})"


def down(settings: Settings) -> bool:
    return proc.stop(settings.stack_dir, name(settings))
