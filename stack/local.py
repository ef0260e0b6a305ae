"""``feedcast stack up|down|status``: the whole local stack, idempotent, waiting for health."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from core.settings import Settings
from stack import cassandra, mlflow_server, monitoring, nginx, origin, proc, ray_head, redis


@dataclass(frozen=True)
class Component:
    name: str
    up: Callable[[Settings], str]
    down: Callable[[Settings], bool]
    answers: Callable[[Settings], bool]
    # The pid file's name, where it depends on the settings (one Redis, origin, edge per port).
    pid_name: Callable[[Settings], str] | None = None


COMPONENTS = (
    Component("redis", redis.up, redis.down, redis.answers, redis.name),
    Component("mlflow", mlflow_server.up, mlflow_server.down, mlflow_server.answers),
    Component("cassandra", cassandra.up, cassandra.down, cassandra.answers),
    # The media origin reads posts from Cassandra (lazily: it may start before the schema).
    Component("origin", origin.up, origin.down, origin.answers, origin.name),
    # The CDN edge in front of the origin.
    Component("edge", nginx.up, nginx.down, nginx.answers, nginx.name),
    # Prometheus (scraping Ray's metrics port, evaluating monitoring/rules.yml) and Alertmanager.
    Component(
        "monitoring",
        monitoring.up,
        monitoring.down,
        monitoring.answers,
        monitoring.prometheus_name,
    ),
)


def up(settings: Settings, report: Callable[[str], None] = print) -> list[str]:
    """Start what is not running yet; return the names of the components this call started."""
    settings.stack_dir.mkdir(parents=True, exist_ok=True)
    started = []
    for c in COMPONENTS:
        message = c.up(settings)
        report(f"{c.name:<10} {message}")
        if message.startswith("started"):
            started.append(c.name)
    from core.schema import apply_schema  # lazy: cassandra-driver ~0.1 s; `down` needs none

    applied = apply_schema(settings)
    report(f"{'schema':<10} keyspace {settings.cassandra_keyspace}: {applied}")
    return started


def stop(settings: Settings, names: list[str]) -> None:
    """Stop the named components (those a caller started), in reverse start order."""
    for c in reversed(COMPONENTS):
        if c.name in names:
            c.down(settings)


def down(settings: Settings, report: Callable[[str], None] = print) -> None:
    # The Ray head (started by `feedcast serve`) goes first: it holds connections to the rest.
    report(f"{'ray':<10} {'stopped' if ray_head.down(settings) else 'not started by us'}")
    for c in reversed(COMPONENTS):
        report(f"{c.name:<10} {'stopped' if c.down(settings) else 'not started by us'}")


def status(settings: Settings) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for c in COMPONENTS:
        pid_name = c.pid_name(settings) if c.pid_name else c.name
        out[c.name] = {
            "pid": proc.read_pid(settings.stack_dir, pid_name),
            "healthy": c.answers(settings),
        }
    out["ray"] = {
        "pid": proc.read_pid(settings.stack_dir, "ray"),
        "healthy": ray_head.running(settings),
    }
    return out
