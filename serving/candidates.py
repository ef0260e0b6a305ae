"""Candidate generation: fan-out timeline partitions, big accounts pulled at read time, and an
explore source (recent popular posts), each under a cap of its own."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cassandra.cluster import ResponseFuture, Session
from cassandra.query import PreparedStatement

from core.db import TUPLES
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


class PullCache:
    """Recent posts of big accounts, shared by every reader a replica serves, for ``ttl_s``.

    A celebrity's posts are the same for each of their millions of followers, so pulling them
    per request would read the same partitions over and over. Each replica keeps its own copy
    (losing it costs a re-read, nothing else), so a new post of a big account reaches readers
    at most ``ttl_s`` late. ``ttl_s = 0`` reads every time.
    """

    def __init__(self, ttl_s: float, max_authors: int = 10_000) -> None:
        self.ttl_s, self.max_authors = ttl_s, max_authors
        self._posts: dict[tuple[int, int], tuple[float, list[Candidate]]] = {}

    def get(self, author: int, day: int) -> list[Candidate] | None:
        hit = self._posts.get((author, day))
        if hit is None or time.monotonic() - hit[0] > self.ttl_s:
            return None
        return hit[1]

    def put(self, author: int, day: int, posts: list[Candidate]) -> None:
        if self.ttl_s <= 0:
            return
        if len(self._posts) >= self.max_authors:  # bounded: start over rather than grow
            self._posts.clear()
        self._posts[(author, day)] = (time.monotonic(), posts)


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
    pull_cache: PullCache | None = None,
) -> tuple[list[Candidate], Context]:
    """The user's recent timeline, the recent posts of the big accounts they follow, the
    ``explore`` posts (popular, out of network), and the rule context (posts already engaged
    with, blocked authors, followed accounts).

    Every partition is read concurrently, each with ``timeout_s`` (the step's deadline); a
    Cassandra error propagates so the caller can fall back to a cached page. A post comes from
    the first source that has it (timeline, then pull, then explore), each source capped.
    Big accounts' posts come from ``pull_cache`` while fresh there.
    """
    today = day_bucket(now)
    buckets = [today - d for d in range(days)]

    def read(stmt: PreparedStatement, args: tuple[object, ...]) -> ResponseFuture:
        return session.execute_async(stmt, args, timeout=timeout_s, execution_profile=TUPLES)

    first_day = read(stmts.timeline_day, (user_id, buckets[0], max(1, caps.timeline)))
    engaged = [read(stmts.engaged_day, (user_id, b)) for b in buckets]
    follows = read(stmts.big_followees, (user_id,))
    blocked = read(stmts.blocked, (user_id,))
    follow_rows = list(follows.result())  # (followee_id, followee_followers)
    big = [a for a, n in follow_rows if (n or 0) > pull_threshold]
    pulled: list[Candidate] = []
    pulls = []
    for a in big:
        for b in buckets:
            hit = pull_cache.get(a, b) if pull_cache else None
            if hit is None:
                pulls.append((a, b, read(stmts.author_day, (a, b, max(1, caps.pull)))))
            else:
                pulled.extend(hit)
    # Day partitions newest first, each read only for what the newer ones left of the cap:
    # ~cap rows instead of days × cap (the older days cost a round trip when they are needed).
    tl: list[Candidate] = []
    fut = first_day
    for i in range(len(buckets)):  # rows: (post_id, author_id, created_at, topic)
        tl += [
            Candidate(p, a, as_utc(t), topic or 0, "timeline") for p, a, t, topic in fut.result()
        ]
        left = caps.timeline - len(tl)
        if left <= 0 or i + 1 == len(buckets):
            break
        fut = read(stmts.timeline_day, (user_id, buckets[i + 1], left))
    for a, b, fut in pulls:  # (post_id, created_at, topic)
        posts = [Candidate(p, a, as_utc(t), topic or 0, "pull") for p, t, topic in fut.result()]
        if pull_cache:
            pull_cache.put(a, b, posts)
        pulled.extend(posts)
    context = Context(
        seen={r[0] for fut in engaged for r in fut.result()},
        blocked={r[0] for r in blocked.result()},
        followed={r[0] for r in follow_rows},
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
