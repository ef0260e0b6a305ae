"""Candidate generation: fan-out timeline partitions, big accounts pulled at read time, and an
explore source (recent popular posts), each under a cap of its own."""

from __future__ import annotations

from collections.abc import Sequence
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
    source: str  # "timeline", "pull" or "explore"


@dataclass(frozen=True)
class Caps:
    """Most candidates kept per source (newest first within a source)."""

    timeline: int = 350
    pull: int = 100
    explore: int = 50
    total: int = 500


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
    caps: Caps,
    timeout_s: float,
    explore: Sequence[Candidate] = (),
) -> tuple[list[Candidate], Context]:
    """The user's recent timeline, the recent posts of the big accounts they follow, the
    ``explore`` posts (popular, out of network), and the rule context (posts already engaged
    with, blocked authors, followed accounts).

    Every partition is read concurrently, each with ``timeout_s`` (the step's deadline); a
    Cassandra error propagates so the caller can fall back to a cached page. A post comes from
    the first source that has it (timeline, then pull, then explore), each source capped.
    """
    cap = max(caps.timeline, caps.pull)
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
    tl = [
        Candidate(r.post_id, r.author_id, as_utc(r.created_at), r.topic or 0, "timeline")
        for fut in timeline
        for r in fut.result()
    ]
    follow_rows = list(follows.result())
    big = [r.followee_id for r in follow_rows if (r.followee_followers or 0) > pull_threshold]
    pulls = [
        (a, session.execute_async(stmts.author_day, (a, b, cap), timeout=timeout_s))
        for a in big
        for b in buckets
    ]
    pulled = [
        Candidate(r.post_id, author, as_utc(r.created_at), r.topic or 0, "pull")
        for author, fut in pulls
        for r in fut.result()
    ]
    context = Context(
        seen={r.post_id for fut in engaged for r in fut.result()},
        blocked={r.blocked_id for r in blocked.result()},
        followed={r.followee_id for r in follow_rows},
    )
    out: dict[int, Candidate] = {}
    for source, cap_n in ((tl, caps.timeline), (pulled, caps.pull), (explore, caps.explore)):
        fresh = sorted(
            (c for c in source if c.created_at <= now and c.post_id not in out),
            key=lambda c: (c.created_at, c.post_id),
            reverse=True,
        )
        for c in fresh[: max(0, min(cap_n, caps.total - len(out)))]:
            out[c.post_id] = c
    return list(out.values()), context
