"""One feed request, step by step, each step with a deadline and a degraded path.

Plain Python around real clients (no Ray, no FastAPI): the app calls :meth:`FeedPath.serve`.

| step       | deadline                        | when it fails                                   |
|------------|---------------------------------|-------------------------------------------------|
| candidates | ``deadline_candidates_ms``      | the user's last cached page, else popular posts |
| features   | ``deadline_features_ms``        | every feature unknown (the models' defaults)    |
| model      | —                               | the previous pair, else a like-rate heuristic   |
| side work  | off the response path           | logged and counted, never changes the page      |

Every fallback used is named in the page's ``degraded`` list and counted in the metrics.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from cassandra.cluster import Cluster, Session
from cassandra.query import BatchStatement, BatchType
from pydantic import BaseModel, Field

from core import cache
from core.breaker import Breaker
from core.db import connect, consistency
from core.settings import Settings
from core.statements import Statements
from core.time import day_bucket
from features.online import FeatureReader, reader_for
from serving import candidates, ranking
from serving.metrics import Metrics
from serving.model import ModelHolder, Rankers
from serving.rules import RuleConfig, Scored, apply_rules, later_pages
from serving.warming import Prefetcher, Seen

log = logging.getLogger("feedcast.serving.feed")
T = TypeVar("T")
POPULAR_REFRESH_S = 10.0  # the popular list changes at materialization (hourly)


class FeedItem(BaseModel):
    post_id: int
    author_id: int
    score: float


class FeedPage(BaseModel):
    user_id: int
    items: list[FeedItem]
    model_version: str
    candidates: int = Field(description="Candidates scored for this page.")
    sources: dict[str, int] = Field(description="Candidates per source.")
    degraded: list[str] = Field(description="Steps that fell back to a degraded path.")
    request_id: str


@dataclass(frozen=True)
class Later:
    """What the pages after a served one are made of: the same scored list under the same
    rules (built off the response path, only when prefetch wants them)."""

    scored: list[Scored]
    ctx: candidates.Context
    rules: RuleConfig
    limit: int

    def pages(self, served: list[Scored], n: int) -> list[list[Scored]]:
        return later_pages(
            self.scored,
            served,
            self.limit,
            n,
            seen=self.ctx.seen,
            blocked_authors=self.ctx.blocked,
            config=self.rules,
        )


def _cached(
    page: list[Scored],
    meta: dict[int, candidates.Candidate],
    media: dict[int, tuple[str, int]],
) -> list[cache.CachedItem]:
    """A page as cached: each item with its candidate's topic and time, and its media."""
    return [
        cache.CachedItem(
            i.post_id,
            i.author_id,
            meta[i.post_id].topic,
            meta[i.post_id].created_at.timestamp(),
            i.score,
            *media.get(i.post_id, ("", 0)),
            e_dwell_s=i.e_dwell,
        )
        for i in page
        if i.post_id in meta
    ]


class FeedPath:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.metrics = Metrics()
        self.redis = cache.client(settings, timeout_s=settings.deadline_features_ms / 1000)
        # One breaker for every Redis call this replica makes (rate limit, features, page
        # cache, prefetch): when Redis hangs, one probe a cool-down pays the timeout, not every
        # call of every request.
        self.redis_breaker = Breaker(1.0)
        self.reader: FeatureReader = reader_for(settings, self.redis)
        self.models = ModelHolder(settings)
        self.models.refresh()
        self.models.poll()
        self._db: tuple[Cluster, Session, Statements] | None = None
        self._db_lock = threading.Lock()
        self._db_breaker = Breaker(2.0)
        self._popular: tuple[float, list[cache.CachedItem], list[candidates.Candidate]] = (
            0.0,
            [],
            [],
        )
        self._pulls = candidates.PullCache(settings.pull_cache_s)
        self.prefetch = Prefetcher(
            settings, self.metrics, lambda: self._connect()[1:], breaker=self.redis_breaker
        )

    # -- dependencies -------------------------------------------------------------------------
    def _connect(self) -> tuple[Cluster, Session, Statements]:
        with self._db_lock:
            if self._db is None:
                if not self._db_breaker.acquire():
                    raise ConnectionError("Cassandra unreachable (retrying shortly)")
                try:
                    cluster, session = connect(self.s, connect_timeout_s=1.0)
                    self._db = (cluster, session, Statements(session, self.s))
                except Exception:
                    self._db_breaker.failure()
                    raise
                self._db_breaker.success()
            return self._db

    def session(self) -> Session:
        return self._connect()[1]

    def stmts(self) -> Statements:
        return self._connect()[2]

    def models_label(self) -> str:
        cur = self.models.current
        return cur.label if cur else ranking.HEURISTIC_LABEL

    def set_alias(self, alias: str) -> None:
        if alias != self.models.alias:
            self.models.alias = alias
            self.models.refresh()

    def _redis_call(self, what: str, fn: Callable[[], T], default: T) -> tuple[T, bool]:
        """``fn()`` unless Redis failed within the breaker's cool-down; (value, answered)."""
        return self.redis_breaker.call(
            fn, default, lambda exc: log.warning("redis %s failed: %s", what, exc)
        )

    def _explore(self) -> tuple[list[candidates.Candidate], list[cache.CachedItem]]:
        """The popular list, as explore candidates and as items; re-read (and converted) from
        Redis at most every ``POPULAR_REFRESH_S``, not on every request."""
        at, items, cands = self._popular
        if time.monotonic() - at > POPULAR_REFRESH_S:
            raw, ok = self._redis_call(
                "popular", lambda: self.redis.get(cache.popular_key(self.s)), None
            )
            if ok:
                items = cache.load_items(raw)
                cands = [
                    candidates.Candidate(
                        i.post_id,
                        i.author_id,
                        datetime.fromtimestamp(i.created_epoch_s, UTC),
                        i.topic,
                        "explore",
                    )
                    for i in items
                ]
                self._popular = (time.monotonic(), items, cands)
        return cands, items

    # -- the request --------------------------------------------------------------------------
    def serve(self, user_id: int, limit: int, request_id: str, side: Executor) -> FeedPage | None:
        """The ranked page for ``user_id``; None when Cassandra says the user does not exist."""
        s, m = self.s, self.metrics
        t0 = time.perf_counter()
        now = datetime.now(UTC)
        rankers = self.models.current  # one pair for the whole request
        degraded: list[str] = []
        explore, popular = self._explore()

        t = time.perf_counter()
        try:
            _, session, stmts = self._connect()
            deadline = s.deadline_candidates_ms / 1000
            user = session.execute_async(stmts.get_user, (user_id,), timeout=deadline)
            cands, ctx = candidates.gather(
                session,
                stmts,
                user_id,
                now,
                days=s.timeline_days,
                pull_threshold=s.pull_follower_threshold,
                caps=candidates.Caps(
                    s.cap_timeline, s.cap_pull, s.cap_explore, s.feed_max_candidates
                ),
                timeout_s=deadline,
                explore=explore,
                pull_cache=self._pulls,
            )
            if user.result().one() is None:
                return None
        except Exception as exc:  # Cassandra down or past the deadline: a page from Redis
            log.warning("candidates unavailable for %s: %s", request_id, exc)
            m.degraded("candidates")
            return self._fallback_page(user_id, limit, request_id, popular, rankers)
        m.observe_stage("candidates", time.perf_counter() - t)
        sources: dict[str, int] = {}
        for c in cands:
            sources[c.source] = sources.get(c.source, 0) + 1
        for name, n in sources.items():
            m.candidates(name, n)

        t = time.perf_counter()
        feats, ok = None, False
        if cands:  # the online store down or hung: rank on unknowns, say so
            feats, ok = self.redis_breaker.call(
                lambda: self.reader.read(
                    user_id,
                    [c.post_id for c in cands],
                    [c.author_id for c in cands],
                    [c.topic for c in cands],
                    now.timestamp(),
                ),
                None,
                lambda exc: log.warning("features unavailable for %s: %s", request_id, exc),
            )
        if cands and not ok:
            degraded.append("features")
            m.degraded("features")
            feats = ranking.unknown_features(len(cands))
        m.observe_stage("features", time.perf_counter() - t)

        if feats is None:
            feats = ranking.unknown_features(0)
        b = ranking.batch(cands, feats, user_id)
        scored, label = self._score(b, ctx.followed, rankers, degraded)

        t = time.perf_counter()
        rules = RuleConfig(
            max_per_author=s.max_per_author,
            max_out_of_network_share=s.max_out_of_network_share,
        )
        page = apply_rules(scored, limit, seen=ctx.seen, blocked_authors=ctx.blocked, config=rules)
        m.observe_stage("rules", time.perf_counter() - t)
        self._log_impressions(session, stmts, user_id, request_id, now, page, label)
        side.submit(self._after_page, user_id, page, Later(scored, ctx, rules, limit), cands)
        m.observe_stage("total", time.perf_counter() - t0)
        m.model_version(label)
        log.info(
            "feed user=%s request=%s candidates=%d degraded=%s ms=%.1f",
            user_id,
            request_id,
            len(cands),
            ",".join(degraded) or "-",
            (time.perf_counter() - t0) * 1000,
        )
        return FeedPage(
            user_id=user_id,
            items=[FeedItem(post_id=i.post_id, author_id=i.author_id, score=i.score) for i in page],
            model_version=label,
            candidates=len(cands),
            sources=sources,
            degraded=degraded,
            request_id=request_id,
        )

    def _score(
        self, b: ranking.Batch, followed: set[int], rankers: Rankers | None, degraded: list[str]
    ) -> tuple[list[Scored], str]:
        """Current pair, else the previous pair, else the heuristic (each fallback is named)."""
        s = self.s
        for pair in (rankers, self.models.previous):
            if pair is None:
                continue
            try:
                out = ranking.score(
                    pair,
                    b,
                    followed,
                    keep=s.light_keep,
                    weights=s.blend_weights,
                    observe=self.metrics.observe_stage,
                )
                if pair is not rankers:
                    degraded.append("model")
                    self.metrics.degraded("model")
                return out, pair.label
            except Exception as exc:
                log.warning("model %s failed: %s", pair.label, exc)
        degraded.append("model")
        self.metrics.degraded("model")
        return ranking.heuristic(b, followed), ranking.HEURISTIC_LABEL

    def _fallback_page(
        self,
        user_id: int,
        limit: int,
        request_id: str,
        popular: list[cache.CachedItem],
        rankers: Rankers | None,
    ) -> FeedPage:
        raw, ok = self._redis_call(
            "page", lambda: self.redis.get(cache.page_key(self.s, user_id)), None
        )
        items = cache.load_items(raw)
        degraded = ["candidates"]
        if not items:
            items = popular
            degraded.append("popular")
        if not ok:
            degraded.append("cache")
        return FeedPage(
            user_id=user_id,
            items=[
                FeedItem(post_id=i.post_id, author_id=i.author_id, score=i.score)
                for i in items[:limit]
            ],
            model_version=rankers.label if rankers else ranking.HEURISTIC_LABEL,
            candidates=0,
            sources={},
            degraded=degraded,
            request_id=request_id,
        )

    # -- side work, off the response path ----------------------------------------------------
    def _after_page(
        self, user_id: int, page: list[Scored], later: Later, cands: list[candidates.Candidate]
    ) -> None:
        """Cache the page (the fallback, and what impressions plan from), then prefetch."""
        try:
            on = self.prefetch.enabled()
            meta = {c.post_id: c for c in cands}
            pages = later.pages(page, self.s.prefetch_max_pages) if on else []
            try:
                media = self.prefetch.media.get(
                    [i.post_id for p in (page, *pages) for i in p if i.post_id in meta]
                )
            except Exception as exc:  # Cassandra: the page is cached without media
                log.warning("media of %s's page unreadable: %s", user_id, exc)
                media, on = {}, False
            items = _cached(page, meta, media)
            self._cache_page(user_id, items)
            if on:
                self.prefetch.on_page(user_id, items, [_cached(p, meta, media) for p in pages])
        except Exception:  # side work never raises into the executor unseen
            log.exception("side work after %s's page failed", user_id)
            self.metrics.degraded("prefetch")

    def after_impressions(self, seen: list[Seen]) -> None:
        """Impressions were stored: roll the prefetch along (side work, never raises)."""
        try:
            self.prefetch.on_impressions(seen)
        except Exception:
            log.exception("prefetch after %d impressions failed", len(seen))
            self.metrics.degraded("prefetch")

    def _cache_page(self, user_id: int, items: list[cache.CachedItem]) -> None:
        if items:
            self._redis_call(
                "cache page",
                lambda: self.redis.set(
                    cache.page_key(self.s, user_id),
                    cache.dump_items(items),
                    ex=self.s.page_cache_ttl_s,
                ),
                None,
            )

    def _log_impressions(
        self,
        session: Session,
        stmts: Statements,
        user_id: int,
        request_id: str,
        now: datetime,
        page: list[Scored],
        label: str,
    ) -> None:
        """Write what was shown (asynchronous, errors only logged and counted).

        Every row of a page lands in the same (user, day) partition, so the page is one
        unlogged single-partition batch: one round trip, applied atomically. The page is
        deterministic given its inputs, so each item's propensity is 1.
        """
        if not page:
            return
        batch = BatchStatement(
            batch_type=BatchType.UNLOGGED,
            consistency_level=consistency(self.s.cassandra_write_consistency),
        )
        day = day_bucket(now)
        for pos, item in enumerate(page):
            batch.add(
                stmts.insert_impression,
                (
                    user_id,
                    day,
                    now,
                    request_id,
                    pos,
                    item.post_id,
                    item.author_id,
                    label,
                    item.score,
                    1.0,
                ),
            )
        fut = session.execute_async(batch, timeout=self.s.cassandra_request_timeout_s)

        def failed(exc: BaseException) -> None:
            log.warning("impression write failed: %s", exc)
            self.metrics.degraded("impressions")

        fut.add_errback(failed)
