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
    topic: int
    source: str  # "timeline" or "pull"


@dataclass(frozen=True)
class Context:
    """What the page rules need besides the candidates."""

    seen: set[int]
    blocked: set[int]
    followed: set[int]


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
) -> tuple[list[Candidate], Context]:
    """The user's recent timeline, the recent posts of the big accounts they follow, and the
    rule context (posts already engaged with, blocked authors, followed accounts).

    Every partition is read concurrently; the newest ``cap`` candidates are kept.
    """
    today = day_bucket(now)
    buckets = [today - d for d in range(days)]
    timeline: list[ResponseFuture] = [
        session.execute_async(stmts.timeline_day, (user_id, b, cap), timeout=timeout_s)
        for b in buckets
    ]
    engaged = [
        session.execute_async(stmts.engaged_day, (user_id, b), timeout=timeout_s) for b in buckets
    ]
    follows = session.execute_async(stmts.big_followees, (user_id,), timeout=timeout_s)
    blocked = session.execute_async(stmts.blocked, (user_id,), timeout=timeout_s)
    out: dict[int, Candidate] = {}
    for fut in timeline:
        for r in fut.result():
            out.setdefault(
                r.post_id,
                Candidate(r.post_id, r.author_id, as_utc(r.created_at), r.topic or 0, "timeline"),
            )
    follow_rows = list(follows.result())
    big = [r.followee_id for r in follow_rows if (r.followee_followers or 0) > pull_threshold]
    pulls = [
        (a, session.execute_async(stmts.author_day, (a, b, cap), timeout=timeout_s))
        for a in big
        for b in buckets
    ]
    for author, fut in pulls:
        for r in fut.result():
            out.setdefault(
                r.post_id, Candidate(r.post_id, author, as_utc(r.created_at), r.topic or 0, "pull")
            )
    context = Context(
        seen={r.post_id for fut in engaged for r in fut.result()},
        blocked={r.blocked_id for r in blocked.result()},
        followed={r.followee_id for r in follow_rows},
    )
    ranked = sorted(out.values(), key=lambda c: (c.created_at, c.post_id), reverse=True)
    return [c for c in ranked if c.created_at <= now][:cap], context
