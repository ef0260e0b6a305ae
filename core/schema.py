"""Versioned CQL migrations (``core/schema/NNN_name.cql``), applied idempotently."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from cassandra import InvalidRequest
from cassandra.cluster import Session

from core.db import connect
from core.settings import Settings

SCHEMA_DIR = Path(__file__).resolve().parent / "schema"
_KEYSPACE_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9_]{0,47}$")


def migrations() -> list[tuple[int, str, list[str]]]:
    """(version, name, statements) for every migration file, in version order."""
    out = []
    for path in sorted(SCHEMA_DIR.glob("[0-9][0-9][0-9]_*.cql")):
        version = int(path.name[:3])
        body = "\n".join(
            line for line in path.read_text().splitlines() if not line.strip().startswith("--")
        )
        statements = [s.strip() for s in body.split(";") if s.strip()]
        out.append((version, path.stem[4:], statements))
    return out


def _execute_idempotent(session: Session, stmt: str) -> None:
    """CREATE ... IF NOT EXISTS is idempotent by itself; ALTER ... ADD of a column that a crashed
    earlier run already added is treated as done."""
    try:
        session.execute(stmt, timeout=30)
    except InvalidRequest as exc:
        if stmt.upper().startswith("ALTER TABLE") and "conflicts with an existing column" in str(
            exc
        ):
            return
        raise


def apply_schema(settings: Settings) -> str:
    """Create the keyspace and apply the migrations not yet recorded; say what was done."""
    ks = settings.cassandra_keyspace
    if not _KEYSPACE_RE.match(ks):
        raise ValueError(f"invalid keyspace name {ks!r}: letters, digits and _ only")
    cluster, session = connect(settings, keyspace=None)
    try:
        session.execute(
            f"CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = "
            f"{{'class': 'SimpleStrategy', 'replication_factor': "
            f"{settings.cassandra_replication_factor}}}",
            timeout=30,
        )
        session.set_keyspace(ks)
        session.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version int PRIMARY KEY, name text, applied_at timestamp)",
            timeout=30,
        )
        done = {row.version for row in session.execute("SELECT version FROM schema_migrations")}
        applied = []
        for version, name, statements in migrations():
            if version in done:
                continue
            for stmt in statements:  # idempotent: a crash half-way through re-runs safely
                _execute_idempotent(session, stmt)
            session.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (%s, %s, %s)",
                (version, name, datetime.now(UTC)),
            )
            applied.append(f"{version:03d}_{name}")
        return f"applied {', '.join(applied)}" if applied else "up to date"
    finally:
        cluster.shutdown()
