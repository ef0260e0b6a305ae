"""The serving side of prefetch: what a replica warms after it served a page or saw an impression.

Everything here runs on the replica's side executor, after the response left: it reads the
media of the page's posts, plans with :func:`prefetch.planner.plan` and hands the paths to a
per-replica :class:`~prefetch.warm.EdgeWarmer` (a bounded queue: what does not fit is dropped,
counted). The pages after the served one are the user's ranked session (``serving.sessions``):
the feed path hands this module the served page followed by the session's likely next page,
so an impression near the end of a page warms the first items of the next.
A failure anywhere is logged and counted in the metrics, never raised into a request.

Where the planner's inputs come from (``prefetch.pages``): media from ``posts_by_id`` behind a
per-replica LRU, carried in the cached page too (an impression needs one Redis read, not a
Cassandra one); the user's continuation rate from their impressions; P(autoplay) from the heavy
ranker's E[dwell]. The live switch (``core.cache.prefetch_switch_key``) is read at most once a
second per replica.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cassandra.cluster import Session

from core import cache
from core.breaker import Breaker
from core.settings import Settings
from core.statements import Statements
from prefetch import planner
from prefetch.pages import (
    CONTINUES,
    ENDS,
    STARTS,
    MediaCache,
    plan_config,
    plan_items,
    read_continuation,
)
from prefetch.warm import EdgeWarmer
from serving.metrics import Metrics

log = logging.getLogger("feedcast.serving.warming")

SWITCH_CHECK_S = 1.0  # how often a replica re-reads the live switch
RECENT_MAX = 50_000  # paths remembered (bounded: start over rather than grow)
SCROLL_TTL_S = 30 * 86_400  # a user's scrolling counts expire after a month without impressions


@dataclass(frozen=True)
class Seen:
    """One impression the planner can roll from: the user, the post, and where it was shown."""

    user_id: int
    post_id: int
    position: int | None  # None: look the post up in the user's last served page


class Prefetcher:
    """One per replica: plans from served pages and impressions, warms the edge and Redis."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        db: Callable[[], tuple[Session, Statements]],
        *,
        breaker: Breaker | None = None,
    ) -> None:
        """``breaker``: the replica's Redis breaker; while it is open, Redis is skipped."""
        self.s, self.metrics = settings, metrics
        self.media = MediaCache(settings, db)
        self.edge = EdgeWarmer(settings, observe=metrics.prefetch_warm)
        breaker = breaker or Breaker(1.0)
        self.redis = cache.client(
            settings, timeout_s=settings.deadline_redis_ms / 1000, breaker=breaker
        )
        self.cfg = plan_config(settings)
        self._switch = (float("-inf"), settings.prefetch_enabled)
        # Popular posts are on many users' pages: the edge warmed (or refreshed) one seconds
        # ago still holds it, and asking again costs a request on both sides for nothing.
        self._recent: dict[str, float] = {}
        self._recent_lock = threading.Lock()
        # post ids → (path, bytes) of the stored renditions to warm for posts with real media;
        # the replica's lookup (``FeedPath._warm_targets``); none: every post is simulated.
        self.stored: Callable[[Sequence[int]], dict[int, tuple[str, int]]] | None = None

    def _stored(self, items: Sequence[cache.CachedItem]) -> dict[int, tuple[str, int]] | None:
        return self.stored([i.post_id for i in items]) if self.stored is not None else None

    def enabled(self) -> bool:
        """``prefetch_enabled``, unless the live switch in Redis says ``off`` (read ≤ 1/s)."""
        if not self.s.prefetch_enabled:
            return False
        at, on = self._switch
        if time.monotonic() - at > SWITCH_CHECK_S:
            try:
                raw = self.redis.get(cache.prefetch_switch_key(self.s))
                on = raw not in (b"off", "off")
            except Exception as exc:  # Redis down: keep the last answer
                log.warning("prefetch switch unreadable: %s", exc)
            self._switch = (time.monotonic(), on)
        return on

    def p_continue(self, user_id: int) -> float:
        return read_continuation(self.redis, self.s, user_id)

    def submit(self, trigger: str, actions: list[planner.WarmAction]) -> int:
        """Queue the actions' paths at the edge, but those this replica queued within
        ``prefetch_requeue_s`` (counted as ``already``); returns how many were queued."""
        self.metrics.prefetch_planned(trigger, len(actions))
        now, again_s = time.monotonic(), self.s.prefetch_requeue_s
        with self._recent_lock:
            if len(self._recent) > RECENT_MAX:
                self._recent.clear()
            fresh = [a.path for a in actions if now - self._recent.get(a.path, -again_s) >= again_s]
            for path in fresh:
                self._recent[path] = now
        if len(fresh) < len(actions):
            self.metrics.prefetch_warm("already", len(actions) - len(fresh))
        queued = self.edge.submit(fresh)
        self.metrics.prefetch_warm("submitted", queued)
        return queued

    def on_page(self, items: Sequence[cache.CachedItem], p_continue: float) -> None:
        """A page was served (``items``: it, then the session's next page): warm its objects
        ahead of the first screen. ``p_continue``: the user's continuation rate, which the
        feed reads in the round trip that caches the page."""
        stored = self._stored(items)
        self.submit(
            "page", plan_items(self.s, items, p_continue, at=None, cfg=self.cfg, stored=stored)
        )

    def on_impressions(self, seen: Sequence[Seen]) -> None:
        """Impressions arrived: count the users' scrolling, warm ``lookahead`` ahead of each."""
        s = self.s
        by_user: dict[int, list[Seen]] = {}
        for e in seen:
            by_user.setdefault(e.user_id, []).append(e)
        for user_id, events in by_user.items():
            try:
                page = cache.load_items(self.redis.get(cache.page_key(s, user_id)))
            except Exception as exc:
                log.warning("last page unreadable for %s: %s", user_id, exc)
                page = []
            where = {i.post_id: k for k, i in enumerate(page)}
            positions = [
                e.position if e.position is not None else where.get(e.post_id) for e in events
            ]
            known = [p for p in positions if p is not None]
            self._count(user_id, known, len(page))
            if not page or not self.enabled():
                continue
            c = self.p_continue(user_id)
            stored = self._stored(page)
            actions: dict[str, planner.WarmAction] = {}
            for at in known:
                for a in plan_items(s, page, c, at=at, cfg=self.cfg, stored=stored):
                    actions.setdefault(a.path, a)
            self.submit("impression", list(actions.values()))

    def _count(self, user_id: int, positions: list[int], page_len: int) -> None:
        if not positions:
            return
        starts = sum(1 for p in positions if p == 0)
        conts = len(positions) - starts
        ends = sum(1 for p in positions if p == page_len - 1) if page_len > 1 else 0
        key = cache.continuation_key(self.s, user_id)
        try:
            pipe = self.redis.pipeline(transaction=False)
            if starts:
                pipe.hincrby(key, STARTS, starts)
            if conts:
                pipe.hincrby(key, CONTINUES, conts)
            if ends:
                pipe.hincrby(key, ENDS, ends)
            pipe.expire(key, SCROLL_TTL_S)
            pipe.execute()
        except Exception as exc:
            log.warning("scroll counts not written for %s: %s", user_id, exc)

    def close(self) -> None:
        self.edge.close()
        self.redis.close()
