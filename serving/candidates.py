"""Candidate generation: the user's recent timeline (fan-out on write), the recent posts of the
big accounts they follow (pulled at read time), and an explore source (recent popular posts),
each under a cap of its own.

Two Cassandra reads, sent together (schema v6, ``core.context``): the user's context row (who
they follow, whom they blocked, what they engaged with lately) and the newest ``cap_timeline``
rows of their one timeline partition, which a Redis copy (:class:`TimelineCache`) spares for
``timeline_cache_s`` after it was read. Big accounts' posts come from a per-replica cache
(:class:`PullCache`) and cost a read only when it is stale. Rows stay tuples and become arrays
(:class:`Candidates`); no Python object per candidate.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import redis
from cassandra.cluster import ResponseFuture, Session
from cassandra.query import PreparedStatement

from core import context
from core.breaker import Breaker
from core.cache import context_key, timeline_key
from core.db import TUPLES
from core.settings import Settings
from core.statements import Statements
from core.time import day_bucket

SOURCES = ("timeline", "pull", "explore")
TIMELINE, PULL, EXPLORE = range(3)


@dataclass(frozen=True)
class Candidates:
    """Candidates as parallel arrays: ids, creation time (epoch ms), topic, source code."""

    post: np.ndarray  # int64
    author: np.ndarray  # int64
    created_ms: np.ndarray  # int64
    topic: np.ndarray  # int64
    source: np.ndarray  # int8, index into SOURCES

    def __len__(self) -> int:
        return len(self.post)

    @staticmethod
    def from_rows(rows: Sequence[tuple[int, int, int, int]], source: int) -> Candidates:
        """``(post, author, created_ms, topic)`` rows (topic may be None)."""
        n = len(rows)
        if not n:
            return EMPTY
        a = np.array([(p, au, t, tp or 0) for p, au, t, tp in rows], dtype=np.int64).reshape(n, 4)
        return Candidates(a[:, 0], a[:, 1], a[:, 2], a[:, 3], np.full(n, source, np.int8))

    def take(self, idx: np.ndarray) -> Candidates:
        return Candidates(*(getattr(self, f)[idx] for f in _FIELDS))

    @staticmethod
    def concat(parts: Sequence[Candidates]) -> Candidates:
        parts = [p for p in parts if len(p)]
        if not parts:
            return EMPTY
        return Candidates(*(np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS))

    def source_counts(self) -> dict[str, int]:
        counts = np.bincount(self.source, minlength=len(SOURCES))
        return {SOURCES[k]: int(n) for k, n in enumerate(counts) if n}


_FIELDS = ("post", "author", "created_ms", "topic", "source")
_I64 = np.zeros(0, np.int64)
EMPTY = Candidates(_I64, _I64, _I64, _I64, np.zeros(0, np.int8))


@dataclass(frozen=True)
class Caps:
    """Most candidates kept per source (newest first within a source)."""

    timeline: int = 350
    pull: int = 100
    explore: int = 50
    total: int = 500


class PullCache:
    """Recent posts of big accounts, shared by every reader a replica serves, for ``ttl_s``.

    A celebrity's posts are the same for each of their millions of followers, so pulling them
    per request would read the same partitions over and over. Each replica keeps its own copy
    (losing it costs a re-read, nothing else), so a new post of a big account reaches readers
    at most ``ttl_s`` late. ``ttl_s = 0`` reads every time.
    """

    def __init__(self, ttl_s: float, max_authors: int = 10_000) -> None:
        self.ttl_s, self.max_authors = ttl_s, max_authors
        self._posts: dict[tuple[int, int], tuple[float, Candidates]] = {}

    def get(self, author: int, day: int) -> Candidates | None:
        hit = self._posts.get((author, day))
        if hit is None or time.monotonic() - hit[0] > self.ttl_s:
            return None
        return hit[1]

    def put(self, author: int, day: int, posts: Candidates) -> None:
        if self.ttl_s <= 0:
            return
        if len(self._posts) >= self.max_authors:  # bounded: start over rather than grow
            self._posts.clear()
        self._posts[(author, day)] = (time.monotonic(), posts)


PACKED = np.dtype([("post", "<i8"), ("author", "<i8"), ("created_ms", "<i8"), ("topic", "<i4")])


JITTER = 0.3  # a copy lives between (1 - JITTER) and 1 times its ttl_s


def jittered_ttl_ms(ttl_s: float) -> int:
    """A copy's TTL drawn from [(1 - JITTER) ttl_s, ttl_s]: copies made together (a restart,
    the first minute of load) expire spread out instead of in one wave of Cassandra reads a
    ``ttl_s`` later, a wave that would come back every ``ttl_s`` (docs/PERFORMANCE.md)."""
    return max(1, int(ttl_s * 1000 * random.uniform(1.0 - JITTER, 1.0)))


class TimelineCache:
    """A Redis copy of users' recent timelines, newest first, as packed records.

    Cassandra's ``feed_by_user`` stays the store of record: a miss reads it and writes the copy
    with a TTL of ``ttl_s``. Fan-out puts its post at the head of the copies of the followers
    it wrote to (:meth:`add`), so a new post shows on the follower's next first page and the
    copy survives: dropping it instead sent every follower of every new post back to Cassandra
    (docs/RELIABILITY.md, uploads_2x). A read that raced a fan-out may put back a copy without
    the new post: it lasts ``ttl_s`` at most (the same bound as :class:`PullCache`). Every Redis
    call goes through the replica's breaker; Redis down is a miss, never an error.
    """

    # Atomic per key (one key a call, so Redis Cluster may place keys anywhere): a copy that
    # already holds the record is left alone (fan-out re-runs), a copy whose newest record is
    # newer than this one is dropped (the head stays newest first), else the record goes to
    # the head, the copy is cut to ``cap`` bytes and keeps its TTL. No copy: nothing to do.
    _ADD = """
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local rec, size = ARGV[1], #ARGV[1]
if #v % size ~= 0 then redis.call('DEL', KEYS[1]) return -1 end
for i = 1, #v, size do
  if string.sub(v, i, i + size - 1) == rec then return 0 end
end
if #v >= size then
  local head = 0
  for i = 24, 17, -1 do head = head * 256 + string.byte(v, i) end
  if head > tonumber(ARGV[2]) then redis.call('DEL', KEYS[1]) return -1 end
end
redis.call('SET', KEYS[1], string.sub(rec .. v, 1, tonumber(ARGV[3])), 'KEEPTTL')
return 1
"""

    def __init__(self, settings: Settings, client: redis.Redis, breaker: Breaker) -> None:
        self.s, self.redis, self.breaker = settings, client, breaker
        self.ttl_s = settings.timeline_cache_s
        self._add = client.register_script(self._ADD)

    def get(self, user_id: int) -> Candidates | None:
        if self.ttl_s <= 0:
            return None
        raw: Any
        raw, _ = self.breaker.call(lambda: self.redis.get(timeline_key(self.s, user_id)), None)
        if not isinstance(raw, bytes) or len(raw) % PACKED.itemsize:
            return None
        rows = np.frombuffer(raw, dtype=PACKED)
        return Candidates(
            rows["post"].astype(np.int64),
            rows["author"].astype(np.int64),
            rows["created_ms"].astype(np.int64),
            rows["topic"].astype(np.int64),
            np.full(len(rows), TIMELINE, np.int8),
        )

    def put(self, user_id: int, timeline: Candidates) -> None:
        if self.ttl_s <= 0:
            return
        rows = np.empty(len(timeline), dtype=PACKED)
        rows["post"], rows["author"] = timeline.post, timeline.author
        rows["created_ms"], rows["topic"] = timeline.created_ms, timeline.topic
        key, ttl_ms = timeline_key(self.s, user_id), jittered_ttl_ms(self.ttl_s)
        self.breaker.call(lambda: self.redis.set(key, rows.tobytes(), px=ttl_ms), None)

    def add(self, user_ids: Sequence[int], post: tuple[int, int, int, int]) -> None:
        """``post`` (post, author, created_ms, topic) at the head of the copies of
        ``user_ids``, whose timelines just got it; a copy that cannot take it is dropped."""
        if self.ttl_s <= 0 or not user_ids:
            return
        rec = np.array([post], dtype=PACKED).tobytes()
        args: list[bytes | int] = [rec, post[2], self.s.cap_timeline * PACKED.itemsize]

        def send() -> None:
            pipe = self.redis.pipeline(transaction=False)
            for u in user_ids:
                self._add(keys=[timeline_key(self.s, u)], args=args, client=pipe)
            pipe.execute()

        self.breaker.call(send, None)


class ContextCache:
    """A Redis copy of users' read context (``core.context.UserContext``) for ``ttl_s``.

    Cassandra's ``user_context`` stays the store of record; whatever changes it drops the copy
    (event ingest here, ``forget`` in ``core.context``'s follow and block functions), so the
    next first page reads it afresh. A read that raced such a change may put back the old copy:
    it lasts ``ttl_s`` at most. With the timeline copy, a warm first page touches Cassandra only
    to log its impressions (in bursts: ``serving.impressions``).
    """

    _HEAD = np.dtype(
        [("known", "<i8"), ("followees", "<i8"), ("blocked", "<i8"), ("engaged", "<i8")]
    )

    def __init__(self, settings: Settings, client: redis.Redis, breaker: Breaker) -> None:
        self.s, self.redis, self.breaker = settings, client, breaker
        self.ttl_s = settings.context_cache_s

    def get(self, user_id: int) -> context.UserContext | None:
        if self.ttl_s <= 0:
            return None
        raw: Any
        raw, _ = self.breaker.call(lambda: self.redis.get(context_key(self.s, user_id)), None)
        if not isinstance(raw, bytes) or len(raw) < self._HEAD.itemsize:
            return None
        head = np.frombuffer(raw[: self._HEAD.itemsize], dtype=self._HEAD)[0]
        nf, nb, ne = int(head["followees"]), int(head["blocked"]), int(head["engaged"])
        body = np.frombuffer(raw[self._HEAD.itemsize :], dtype="<i8")
        if len(body) != 2 * nf + nb + ne:
            return None
        ids, counts = body[:nf].tolist(), body[nf : 2 * nf].tolist()
        return context.UserContext(
            bool(head["known"]),
            dict(zip(ids, counts, strict=True)),
            frozenset(body[2 * nf : 2 * nf + nb].tolist()),
            frozenset(body[2 * nf + nb :].tolist()),
        )

    def put(self, user_id: int, ctx: context.UserContext) -> None:
        if self.ttl_s <= 0:
            return
        head = np.array(
            [(int(ctx.known), len(ctx.followees), len(ctx.blocked), len(ctx.engaged))],
            dtype=self._HEAD,
        )
        body = np.array(
            [*ctx.followees, *ctx.followees.values(), *ctx.blocked, *ctx.engaged], dtype="<i8"
        )
        key, ttl_ms = context_key(self.s, user_id), jittered_ttl_ms(self.ttl_s)
        blob = head.tobytes() + body.tobytes()
        self.breaker.call(lambda: self.redis.set(key, blob, px=ttl_ms), None)

    def drop(self, user_ids: Sequence[int]) -> None:
        """Forget the copies of ``user_ids`` (their context just changed)."""
        if self.ttl_s <= 0 or not user_ids:
            return
        keys = [context_key(self.s, u) for u in user_ids]
        self.breaker.call(lambda: self.redis.delete(*keys), None)


def gather(
    session: Session,
    stmts: Statements,
    user_id: int,
    now_ms: int,
    *,
    days: int,
    pull_threshold: int,
    caps: Caps,
    timeout_s: float,
    explore: Candidates = EMPTY,
    pull_cache: PullCache | None = None,
    timeline_cache: TimelineCache | None = None,
    context_cache: ContextCache | None = None,
) -> tuple[Candidates, context.UserContext]:
    """The candidates and the user's context (``known`` False: no such user).

    Seen posts and blocked authors are left out; a post comes from the first source that has it
    (timeline, then pull, then explore), each source capped, newest first within a source, and
    nothing created after ``now_ms``. Every read has ``timeout_s`` (the step's deadline); a
    Cassandra error propagates so the caller can fall back to a cached page.
    """

    def read(stmt: PreparedStatement, args: tuple[object, ...]) -> ResponseFuture:
        return session.execute_async(stmt, args, timeout=timeout_s, execution_profile=TUPLES)

    cached_ctx = context_cache.get(user_id) if context_cache else None
    ctx_fut = None if cached_ctx is not None else read(stmts.get_context, (user_id,))
    timeline = timeline_cache.get(user_id) if timeline_cache else None
    if timeline is None:
        feed_fut = read(stmts.feed_recent, (user_id, max(1, caps.timeline)))
    if cached_ctx is not None:
        ctx = cached_ctx
    else:
        assert ctx_fut is not None
        ctx = context.parse(ctx_fut.result().one())
        if context_cache and ctx.known:
            context_cache.put(user_id, ctx)
    if not ctx.known:
        return EMPTY, ctx
    today = day_bucket_ms(now_ms)
    buckets = [today - d for d in range(days)]
    pulled: list[Candidates] = []
    pulls = []
    for a in ctx.big(pull_threshold):
        for b in buckets:
            hit = pull_cache.get(a, b) if pull_cache else None
            if hit is None:
                pulls.append((a, b, read(stmts.author_day, (a, b, max(1, caps.pull)))))
            else:
                pulled.append(hit)
    if timeline is None:
        timeline = Candidates.from_rows(feed_fut.result().all(), TIMELINE)
        if timeline_cache:
            timeline_cache.put(user_id, timeline)
    for a, b, fut in pulls:  # (post_id, created_at, topic)
        rows = [(p, a, context.to_ms(t), topic) for p, t, topic in fut.result()]
        posts = Candidates.from_rows(rows, PULL)
        if pull_cache:
            pull_cache.put(a, b, posts)
        pulled.append(posts)
    sources = [(timeline, caps.timeline), (Candidates.concat(pulled), caps.pull)]
    return select(
        [*sources, (explore, caps.explore)],
        total=caps.total,
        now_ms=now_ms,
        seen=ctx.engaged,
        blocked=ctx.blocked,
    ), ctx


def day_bucket_ms(at_ms: int) -> int:
    return day_bucket(datetime.fromtimestamp(at_ms / 1000, UTC))


def select(
    sources: Sequence[tuple[Candidates, int]],
    *,
    total: int,
    now_ms: int,
    seen: frozenset[int] = frozenset(),
    blocked: frozenset[int] = frozenset(),
) -> Candidates:
    """Each source's newest posts up to its cap (and all together up to ``total``), in source
    order; a post only from the first source that has it; no seen post, blocked author or
    post from the future."""
    taken: list[Candidates] = []
    have: np.ndarray = _I64
    left = total
    for cands, cap in sources:
        if not len(cands) or left <= 0:
            continue
        ok = cands.created_ms <= now_ms
        if seen:
            ok &= ~np.isin(cands.post, np.fromiter(seen, np.int64, len(seen)))
        if blocked:
            ok &= ~np.isin(cands.author, np.fromiter(blocked, np.int64, len(blocked)))
        if len(have):
            ok &= ~np.isin(cands.post, have)
        idx = np.flatnonzero(ok)
        # Newest first, ties by post id (descending), as the tables cluster them.
        order = np.lexsort((-cands.post[idx], -cands.created_ms[idx]))
        idx = idx[order]
        _, first = np.unique(cands.post[idx], return_index=True)  # duplicates within a source
        idx = idx[np.sort(first)][: max(0, min(cap, left))]
        part = cands.take(idx)
        taken.append(part)
        have = np.concatenate([have, part.post])
        left -= len(part)
    return Candidates.concat(taken)
