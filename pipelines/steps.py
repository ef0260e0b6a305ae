"""The steps of the feed loop, each a function the CLI, the demo and the tests call alike."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from core.db import connect
from core.settings import Settings
from core.statements import Statements
from simulator import writer
from simulator.config import WorldConfig
from simulator.world import World, generate


@dataclass(frozen=True)
class WorldSummary:
    rows: dict[str, int]
    cassandra: dict[str, int]
    out: str


class WorldExistsError(RuntimeError):
    """The keyspace already holds a world and replacing it was not asked for."""


WORLD_TABLES = (
    "users_by_id",
    "posts_by_id",
    "posts_by_author",
    "follows_by_user",
    "followers_by_user",
    "timeline_by_user",
    "interactions_by_user",
    "interactions_by_post",
    "impressions_by_user",
)


def generate_world(
    settings: Settings,
    config: WorldConfig,
    *,
    to_cassandra: bool = True,
    replace: bool = False,
    progress: bool = False,
) -> tuple[World, WorldSummary]:
    """Generate a world, export its log to parquet and (by default) write it to Cassandra.

    A keyspace that already holds users is left untouched unless ``replace`` is true; then the
    world tables are truncated first, so two worlds never mix.
    """
    written: dict[str, int] = {}
    cluster = session = None
    if to_cassandra:
        from core.schema import apply_schema

        apply_schema(settings)
        cluster, session = connect(settings)
    try:
        if (
            session is not None
            and session.execute(Statements(session, settings).any_user).one() is not None
        ):
            if not replace:
                raise WorldExistsError(
                    f"keyspace {settings.cassandra_keyspace} already holds a world; "
                    "pass --replace to replace it"
                )
            for table in WORLD_TABLES:
                session.execute(f"TRUNCATE {table}", timeout=60)
        world = generate(config, progress=progress)
        out = writer.write_parquet(world, settings.world_dir)
        if session is not None:
            written = writer.write_cassandra(world, session, settings, progress=progress)
    finally:
        if cluster is not None:
            cluster.shutdown()
    rows = {
        n: len(getattr(world, n))
        for n in ("users", "posts", "follows", "impressions", "interactions")
    }
    return world, WorldSummary(rows, written, str(out))


def features_apply(settings: Settings) -> dict[str, int]:
    from features.store import apply

    _require_world(settings)
    return apply(settings)


def features_materialize(settings: Settings, end: datetime | None = None) -> None:
    from features.store import materialize

    if not (settings.feast_dir / "registry.db").exists():
        raise FileNotFoundError("no Feast registry yet: run `feedcast features apply` first")
    materialize(settings, end)


def _require_world(settings: Settings) -> None:
    if not (settings.world_dir / "impressions.parquet").exists():
        raise FileNotFoundError(
            f"no world under {settings.world_dir}: run `feedcast world generate` first"
        )
