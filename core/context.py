"""A user's read context and recent timeline, kept where they change (schema v6).

A first page needs, besides candidates, who the user follows (and which of them are big enough
to be pulled at read time), whom they blocked, and which posts they engaged with lately. These
live in one ``user_context`` row, written by whatever changes them: the world writer, the
follow/block functions here, and event ingest (``engaged``). The timeline the feed reads is
``feed_by_user``: one partition per user, newest first. Both trim themselves by TTL: a row of
the timeline and an element of ``engaged`` live for what is left of the window
(``timeline_days``) after their own time.

The tables of record stay the same (``follows_by_user``, ``blocks_by_user``,
``interactions_by_user``, the old day-bucketed ``timeline_by_user``); :func:`rebuild` rewrites
a user's context and timeline from them (``feedcast context rebuild``): after a migration, or
when a write of the context failed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cassandra.cluster import Session
from cassandra.concurrent import execute_concurrent_with_args
from cassandra.query import PreparedStatement

from core.statements import Statements
from core.time import as_utc, day_bucket

DAY_S = 86_400
TTL_GRAIN_S = 600  # bulk writes group elements whose TTLs differ by less than this


def window_s(days: int) -> int:
    return days * DAY_S


def ttl_s(at_ms: int, now_ms: int, days: int) -> int:
    """Seconds a row stamped ``at_ms`` has left in a window of ``days`` (0: already out).

    A time in the future (clock skew, a scheduled post) gets the whole window, never more."""
    age_s = max(0, now_ms - at_ms) // 1000
    return max(0, window_s(days) - age_s)


def to_ms(t: datetime) -> int:
    return int(as_utc(t).timestamp() * 1000)


@dataclass(frozen=True)
class UserContext:
    """One ``user_context`` row."""

    known: bool
    followees: dict[int, int]  # followee → their follower count when followed
    blocked: frozenset[int]
    engaged: frozenset[int]

    def big(self, threshold: int) -> list[int]:
        """Followees above ``threshold`` followers: their posts are pulled at read time."""
        return sorted(a for a, n in self.followees.items() if (n or 0) > threshold)


EMPTY = UserContext(False, {}, frozenset(), frozenset())


def parse(row: Sequence[Any] | None) -> UserContext:
    """A ``get_context`` row (tuple or named) as a :class:`UserContext`; no row: :data:`EMPTY`."""
    if row is None:
        return EMPTY
    known, followees, blocked, engaged = row
    return UserContext(
        bool(known), dict(followees or {}), frozenset(blocked or ()), frozenset(engaged or ())
    )


Forget = Callable[[list[int]], None]  # drops cached copies of these users' context


def _write(
    session: Session,
    writes: Sequence[tuple[PreparedStatement, tuple[object, ...]]],
    user: int,
    forget: Forget | None,
) -> None:
    """The tables of record, then the user's context row (the last write), then
    ``forget([user])`` (a serving cache of the context, e.g. ``ContextCache.drop``)."""
    for stmt, args in writes:
        session.execute(stmt, args)
    if forget:
        forget([user])


def follow(
    session: Session,
    stmts: Statements,
    user: int,
    followee: int,
    followee_followers: int,
    forget: Forget | None = None,
) -> None:
    """``user`` follows ``followee``: their next first page pulls or fans in its posts."""
    writes = [
        (stmts.insert_follow, (user, followee, followee_followers)),
        (stmts.insert_follower, (followee, user)),
        (stmts.context_follow, ({followee: followee_followers}, user)),
    ]
    _write(session, writes, user, forget)


def unfollow(
    session: Session, stmts: Statements, user: int, followee: int, forget: Forget | None = None
) -> None:
    writes = [
        (stmts.delete_follow, (user, followee)),
        (stmts.delete_follower, (followee, user)),
        (stmts.context_unfollow, ({followee}, user)),
    ]
    _write(session, writes, user, forget)


def block(
    session: Session, stmts: Statements, user: int, blocked: int, forget: Forget | None = None
) -> None:
    """``user`` blocks ``blocked``: their posts leave the user's next first page."""
    writes = [(stmts.insert_block, (user, blocked)), (stmts.context_block, ({blocked}, user))]
    _write(session, writes, user, forget)


def unblock(
    session: Session, stmts: Statements, user: int, blocked: int, forget: Forget | None = None
) -> None:
    writes = [(stmts.delete_block, (user, blocked)), (stmts.context_unblock, ({blocked}, user))]
    _write(session, writes, user, forget)


def engaged_args(
    events: Iterable[tuple[int, int, int]], now_ms: int, days: int
) -> list[tuple[int, set[int], int]]:
    """``context_engaged`` arguments (ttl, posts, user) for ``(user, post, at_ms)`` events:
    one statement per user and TTL grain (each element keeps about its own TTL, rounded up
    to the grain); events already out of the window are left out."""
    groups: dict[tuple[int, int], set[int]] = defaultdict(set)
    for user, post, at_ms in events:
        ttl = ttl_s(at_ms, now_ms, days)
        if ttl > 0:
            grain = -(-ttl // TTL_GRAIN_S) * TTL_GRAIN_S
            groups[(user, min(grain, window_s(days)))].add(post)
    return [(ttl, posts, user) for (user, ttl), posts in groups.items()]


def add_engaged(
    session: Session,
    stmts: Statements,
    events: Iterable[tuple[int, int, int]],
    *,
    now_ms: int,
    days: int,
    concurrency: int = 32,
) -> int:
    """Add the ``(user, post, at_ms)`` events' posts to their users' ``engaged``; statements."""
    args = engaged_args(events, now_ms, days)
    if args:
        execute_concurrent_with_args(
            session, stmts.context_engaged, args, concurrency=concurrency, raise_on_first_error=True
        )
    return len(args)


def feed_args(
    rows: Iterable[tuple[int, int, int, int, int]], now_ms: int, days: int
) -> list[tuple[int, int, int, int, int, int]]:
    """``insert_feed`` arguments for ``(user, created_ms, post, author, topic)`` timeline rows,
    each with its TTL; rows already out of the window are left out."""
    out = []
    for user, created_ms, post, author, topic in rows:
        ttl = ttl_s(created_ms, now_ms, days)
        if ttl > 0:
            out.append((user, created_ms, post, author, topic, ttl))
    return out


def rebuild(
    session: Session, stmts: Statements, user: int, *, now: datetime, days: int
) -> dict[str, int]:
    """Rewrite ``user``'s context and recent timeline from the tables of record."""
    now_ms = to_ms(now)
    known = session.execute(stmts.get_user, (user,)).one() is not None
    followees = {r[0]: r[1] or 0 for r in session.execute(stmts.big_followees, (user,))}
    blocked = {r[0] for r in session.execute(stmts.blocked, (user,))}
    session.execute(stmts.context_replace, (known, followees, blocked, user))
    today = day_bucket(now)
    start = datetime.fromtimestamp(as_utc(now).timestamp() - window_s(days), UTC)
    events, rows = [], []
    for d in range(days + 1):  # the window reaches into one more day bucket than it spans
        day = today - d
        for post, ts in session.execute(stmts.engaged_since, (user, day, start)):
            events.append((user, post, to_ms(ts)))
        for post, author, created, topic in session.execute(
            stmts.timeline_day, (user, day, 100_000)
        ):
            rows.append((user, to_ms(created), post, author, topic or 0))
    add_engaged(session, stmts, events, now_ms=now_ms, days=days)
    feed = feed_args(rows, now_ms, days)
    if feed:
        execute_concurrent_with_args(session, stmts.insert_feed, feed, concurrency=32)
    return {
        "followees": len(followees),
        "blocked": len(blocked),
        "engaged": len(events),
        "timeline": len(feed),
    }
