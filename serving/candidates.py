"""Candidate generation: fan-out timeline partitions plus big accounts pulled at read time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cassandra.cluster import ResponseFuture, Session

from core.statements import Statements
from core.time import as_utc, day_bucket


@dataclass(frozen=True)
class Candidate:
    post_id: int
    author_id: int
    created_at: datetime
    source: str  # "timeline" or "pull"


def gather(
    session: Session,
    stmts: Statements,
    user_id: int,
    now: datetime,
    *,
    days: int,
    pull_threshold: int,
    cap: int,
    timeout_s: float,
) -> list[Candidate]:
    """The user's recent timeline and the recent posts of the big accounts they follow.

    All day partitions are read concurrently; the newest ``cap`` candidates are kept.
    """
    today = day_bucket(now)
    buckets = [today - d for d in range(days)]
    timeline: list[ResponseFuture] = [
        session.execute_async(stmts.timeline_day, (user_id, b, cap), timeout=timeout_s)
        for b in buckets
    ]
    follows = session.execute_async(stmts.big_followees, (user_id,), timeout=timeout_s)
    out: dict[int, Candidate] = {}
    for fut in timeline:
        for row in fut.result():
            out.setdefault(
                row.post_id,
                Candidate(row.post_id, row.author_id, as_utc(row.created_at), "timeline"),
            )
    big = [r.followee_id for r in follows.result() if (r.followee_followers or 0) > pull_threshold]
    pulls = [
        (a, session.execute_async(stmts.author_day, (a, b, cap), timeout=timeout_s))
        for a in big
        for b in buckets
    ]
    for author, fut in pulls:
        for row in fut.result():
            out.setdefault(
                row.post_id, Candidate(row.post_id, author, as_utc(row.created_at), "pull")
            )
    ranked = sorted(out.values(), key=lambda c: (c.created_at, c.post_id), reverse=True)
    return [c for c in ranked if c.created_at <= now][:cap]
