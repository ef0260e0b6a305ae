"""One feed request, step by step, each step with a deadline and a degraded path.

Plain Python around real clients (no Ray, no FastAPI): the app calls :meth:`FeedPath.serve`.
A request without a cursor ranks and stores a session (``serving.sessions``); a request with
one (``serving.cursor``) is the next slice of that session, with no ranking at all.

| step       | deadline                        | when it fails                                   |
|------------|---------------------------------|-------------------------------------------------|
| candidates | ``deadline_candidates_ms``      | the user's last cached page, else popular posts |
| features   | ``deadline_features_ms``        | every feature unknown (the models' defaults)    |
| model      | —                               | the previous pair, else a like-rate heuristic   |
| media      | ``deadline_candidates_ms``      | items without renditions                        |
| session    | ``deadline_features_ms`` (Redis)| no cursor (a first page); a lost session restarts|
| side work  | off the response path           | logged and counted, never changes the page      |

Every fallback used is named in the page's ``degraded`` list and counted in the metrics.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import numpy as np
import torch
from cassandra.cluster import Cluster, Session

from core import cache, db
from core.breaker import Breaker
from core.settings import Settings
from core.statements import Statements
from core.time import day_bucket
from features.online import FeatureReader, reader_for
from media import ids, objects
from media.renditions import StoredLookup, first_drawn
from prefetch.pages import SCROLL_FIELDS, continuation_of
from serving import candidates, cursor, impressions, ranking, sessions
from serving.metrics import Metrics
from serving.model import ModelHolder, Rankers
from serving.rules import RuleConfig
from serving.schemas import FeedItem, FeedPage, MediaKind, Rendition, Source
from serving.takedown import RemovedPosts
from serving.warming import Prefetcher, Seen

log = logging.getLogger("feedcast.serving.feed")
T = TypeVar("T")
POPULAR_REFRESH_S = 10.0  # the popular list changes at materialization (hourly)


@dataclass
class Served:
    """A page just served: what the side work and the impression log need."""

    request_id: str
    session: sessions.FeedSession
    page: int
    offset: int  # session position of the page's first item
    items: list[cache.CachedItem]


class RedisEpoch:
    """A counter in Redis that every replica watches (:class:`serving.takedown.SharedEpoch`):
    the takedown epoch and the media epoch. Behind the replica's Redis breaker; a failure is
    logged and reads as unreadable (an open breaker too)."""

    def __init__(self, client: Any, key: str, breaker: Breaker) -> None:
        self.client, self.key, self.breaker = client, key, breaker

    def _log(self, exc: Exception) -> None:
        log.warning("redis epoch %s failed: %s", self.key, exc)

    def get(self) -> tuple[bytes | None, bool]:
        return self.breaker.call(
            lambda: cast(bytes | None, self.client.get(self.key)), None, self._log
        )

    def bump(self) -> None:
        self.breaker.call(lambda: self.client.incr(self.key), None, self._log)


def _cached(
    sess: sessions.FeedSession, page: Sequence[sessions.PageItem]
) -> list[cache.CachedItem]:
    """Session rows as cached items (the fallback page, and what impressions plan from)."""
    r = sess.rows
    return [
        cache.CachedItem(
            int(r["post"][i.row]),
            int(r["author"][i.row]),
            int(r["topic"][i.row]),
            float(r["created"][i.row]),
            float(r["score"][i.row]),
            i.media_kind,
            i.media_bytes,
            e_dwell_s=sessions.finite(float(r["dwell"][i.row])),
            source=sessions.SOURCES[int(r["source"][i.row])],
        )
        for i in page
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
        torch.set_num_threads(1)  # one core per replica: intra-op threads only contend
        self.models = ModelHolder(settings)
        self.models.refresh()
        self.models.poll()
        self._db = db.Lazy(
            settings, lambda cluster, session: (cluster, session, Statements(session, settings)),
            Breaker(2.0),
        )  # fmt: skip
        self._popular: tuple[float, list[cache.CachedItem], candidates.Candidates] = (
            0.0,
            [],
            candidates.EMPTY,
        )
        self._pulls = candidates.PullCache(settings.pull_cache_s)
        self.timelines = candidates.TimelineCache(settings, self.redis, self.redis_breaker)
        self.contexts = candidates.ContextCache(settings, self.redis, self.redis_breaker)
        self.stored_media = StoredLookup(self.session)  # uploaded posts' renditions
        self._media_epoch: bytes | None = None  # its value when last read
        self._media_counter = RedisEpoch(
            self.redis, cache.media_epoch_key(settings), self.redis_breaker
        )
        self.removed = RemovedPosts(  # taken-down posts: off every page
            self.session,
            settings.takedown_refresh_s,
            settings.cassandra_request_timeout_s,
            also=self._check_media_epoch,
            epoch=RedisEpoch(self.redis, cache.takedown_epoch_key(settings), self.redis_breaker),
            full_refresh_s=settings.takedown_full_refresh_s,
        )
        self.prefetch = Prefetcher(
            settings, self.metrics, lambda: self._connect()[1:], breaker=self.redis_breaker
        )
        self.prefetch.stored = self._warm_targets
        self.store = sessions.SessionStore(settings, self.redis)
        self.impressions = impressions.ImpressionLog(
            settings, self.metrics, lambda: self._connect()[1:]
        )
        self.keys = cursor.Keys.parse(settings.cursor_keys)
        self.rules = RuleConfig(
            max_per_author=settings.max_per_author,
            max_out_of_network_share=settings.max_out_of_network_share,
        )
        self.removed.start()  # last: its periodic checks use the rest

    # -- dependencies -------------------------------------------------------------------------
    def _connect(self) -> tuple[Cluster, Session, Statements]:
        return self._db.get()

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

    def _explore(self) -> tuple[candidates.Candidates, list[cache.CachedItem]]:
        """The popular list, as explore candidates and as items; re-read (and converted) from
        Redis at most every ``POPULAR_REFRESH_S``, not on every request."""
        at, items, cands = self._popular
        if time.monotonic() - at > POPULAR_REFRESH_S:
            raw, ok = self._redis_call(
                "popular", lambda: self.redis.get(cache.popular_key(self.s)), None
            )
            if ok:
                items = cache.load_items(raw)
                cands = candidates.Candidates.from_rows(
                    [
                        (i.post_id, i.author_id, int(i.created_epoch_s * 1000), i.topic)
                        for i in items
                    ],
                    candidates.EXPLORE,
                )
                self._popular = (time.monotonic(), items, cands)
        return cands, items

    # -- the request --------------------------------------------------------------------------
    def serve(
        self,
        user_id: int,
        limit: int,
        request_id: str,
        side: Executor,
        *,
        cursor_text: str | None = None,
        debug: bool = False,
    ) -> FeedPage | None:
        """The next page for ``user_id``: the cursor's slice of a stored session, or (no cursor,
        or its session is gone) a first page ranked now. None when the user does not exist;
        :class:`~serving.cursor.CursorError` for a cursor that is not this user's or not valid."""
        restarted: str | None = None
        degraded: list[str] = []
        if cursor_text is not None:
            c = cursor.decode(cursor_text, self.keys, user_id=user_id)
            if cursor.expired(c, time.time()):
                restarted = "expired"
            else:
                sess, ok = self._redis_call(
                    "session", lambda: self.store.load(c.session_hex, c.page), None
                )
                if sess is not None and sess.user_id == user_id and len(sess.pages) >= c.page:
                    return self._continue(sess, c, limit, request_id, side, debug)
                restarted = "lost"
                if not ok:
                    degraded.append("session")
                    self.metrics.degraded("session")
        return self._first(user_id, limit, request_id, side, debug, restarted, degraded)

    def _first(
        self,
        user_id: int,
        limit: int,
        request_id: str,
        side: Executor,
        debug: bool,
        restarted: str | None,
        degraded: list[str],
    ) -> FeedPage | None:
        s, m = self.s, self.metrics
        t0 = time.perf_counter()
        now = datetime.now(UTC)
        rankers = self.models.current  # one pair for the whole request
        explore, popular = self._explore()

        t = time.perf_counter()
        try:
            _, session, stmts = self._connect()
            cands, ctx = candidates.gather(
                session,
                stmts,
                user_id,
                int(now.timestamp() * 1000),
                days=s.timeline_days,
                pull_threshold=s.pull_follower_threshold,
                caps=candidates.Caps(
                    s.cap_timeline, s.cap_pull, s.cap_explore, s.feed_max_candidates
                ),
                timeout_s=s.deadline_candidates_ms / 1000,
                explore=explore,
                pull_cache=self._pulls,
                timeline_cache=self.timelines,
                context_cache=self.contexts,
            )
            if not ctx.known:
                return None
        except Exception as exc:  # Cassandra down or past the deadline: a page from Redis
            log.warning("candidates unavailable for %s: %s", request_id, exc)
            m.degraded("candidates")
            return self._fallback_page(user_id, limit, request_id, popular, rankers, degraded)
        m.observe_stage("candidates", time.perf_counter() - t)
        sources = cands.source_counts()
        for name, n in sources.items():
            m.candidates(name, n)

        t = time.perf_counter()
        feats = self._features(
            user_id, cands.post, cands.author, cands.topic, now, request_id, degraded
        )
        m.observe_stage("features", time.perf_counter() - t)
        b = ranking.Batch(user_id, cands.post, cands.author, cands.topic, feats)
        rows, label = self._rank(b, cands, frozenset(ctx.followees), rankers, degraded)
        sess = sessions.FeedSession(
            user_id,
            secrets.token_bytes(cursor.SESSION_ID_BYTES).hex(),
            label,
            now.timestamp(),
            rows,
        )

        t = time.perf_counter()
        first = sessions.next_page(sess, limit, self.rules, self.removed.ids())
        m.observe_stage("rules", time.perf_counter() - t)
        page = self._with_media(sess, first, degraded)
        sess.pages = [page]
        _, stored = self._redis_call("session", lambda: self.store.create(sess), None)
        if stored:
            m.session("new")
        else:
            degraded.append("session")
            m.degraded("session")
            m.session("unsaved")
        if restarted:
            m.session(restarted)
        out = self._respond(
            sess, 0, page, request_id, side, debug, degraded,
            session=("restarted" if restarted else "new"),
            sources=sources,
            resumable=stored,
            candidates_n=len(cands),
        )  # fmt: skip
        m.observe_stage("total", time.perf_counter() - t0)
        m.model_version(sess.model_version)
        # A line per degraded page; the others at DEBUG (the metrics count every page).
        log.log(
            logging.INFO if degraded else logging.DEBUG,
            "feed user=%s request=%s candidates=%d degraded=%s ms=%.1f",
            user_id,
            request_id,
            len(cands),
            ",".join(degraded) or "-",
            (time.perf_counter() - t0) * 1000,
        )
        return out

    def _continue(
        self,
        sess: sessions.FeedSession,
        c: cursor.Cursor,
        limit: int,
        request_id: str,
        side: Executor,
        debug: bool,
    ) -> FeedPage:
        """Page ``c.page`` of a stored session: as stored when it was served before (a retry),
        else the page rules over what the session has left."""
        degraded: list[str] = []
        n = c.page
        stored = True
        if len(sess.pages) > n:  # loaded up to page n: a retry of this cursor
            self.metrics.session("retried")
            page = self._not_removed(sess, sess.pages[n])
        else:
            removed = self.removed.ids()
            rows = sessions.next_page(sess, limit, self.rules, removed)
            if len(rows) < limit and sessions.unscored_left(sess):
                self._extend(sess, degraded)
                rows = sessions.next_page(sess, limit, self.rules, removed)
            fresh = self._with_media(sess, rows, degraded)
            page, stored = self._redis_call(
                "session page", lambda: self.store.put_page(sess, n, fresh), fresh
            )
            if not stored:  # served all the same, with no cursor: nothing to continue from
                degraded.append("session")
                self.metrics.degraded("session")
            sess.pages.append(page)
            self.metrics.session("continued")
        return self._respond(
            sess, n, page, request_id, side, debug, degraded,
            session="continued", sources={}, resumable=stored, candidates_n=len(sess.rows),
        )  # fmt: skip

    def _not_removed(
        self, sess: sessions.FeedSession, page: list[sessions.PageItem]
    ) -> list[sessions.PageItem]:
        """A stored page less what was taken down since it was served (a retry's page)."""
        removed = self.removed.ids()
        if not len(removed):
            return page
        gone = np.isin(sess.rows["post"][[i.row for i in page]], removed)
        return [i for i, g in zip(page, gone.tolist(), strict=True) if not g]

    def _respond(
        self,
        sess: sessions.FeedSession,
        n: int,
        page: list[sessions.PageItem],
        request_id: str,
        side: Executor,
        debug: bool,
        degraded: list[str],
        *,
        session: str,
        sources: dict[str, int],
        resumable: bool,
        candidates_n: int,
    ) -> FeedPage:
        """Log the page's impressions, hand the side work its page, and build the answer."""
        offset = sess.offset(n)
        items = _cached(sess, page)
        served = Served(request_id, sess, n, offset, items)
        self._log_impressions(served, degraded)
        side.submit(self._after_page, served)
        more = resumable and bool(page) and sessions.remaining(sess) > 0
        next_cursor = (
            cursor.encode(
                cursor.Cursor(
                    sess.user_id,
                    bytes.fromhex(sess.session_hex),
                    n + 1,
                    offset + len(page),
                    int(time.time()) + self.s.session_ttl_s,
                ),
                self.keys,
            )
            if more
            else None
        )
        return FeedPage(
            user_id=sess.user_id,
            items=self._items(items, debug, degraded),
            next_cursor=next_cursor,
            session=session,
            page=n,
            model_version=sess.model_version,
            candidates=candidates_n,
            sources=sources,
            degraded=degraded,
            request_id=request_id,
        )

    def _items(
        self, items: Sequence[cache.CachedItem], debug: bool, degraded: list[str]
    ) -> list[FeedItem]:
        """The page's items, built without validation (``model_construct``): every value comes
        from the session's own arrays, the stored renditions of uploaded posts or
        ``objects.renditions``, and the schemathesis run checks the answers against the
        schema."""
        s = self.s
        stored = self._stored_renditions([i.post_id for i in items], degraded)
        return [
            FeedItem.model_construct(
                post_id=i.post_id,
                author_id=i.author_id,
                created_at=datetime.fromtimestamp(i.created_epoch_s, UTC),
                media_kind=cast(
                    MediaKind, i.media_kind if i.media_kind in ("photo", "video") else "unknown"
                ),
                source=cast(Source, i.source or "unknown"),
                position=k,
                renditions=stored[i.post_id]
                if i.post_id in stored
                else [
                    Rendition.model_construct(**r)
                    for r in objects.renditions(
                        i.post_id,
                        i.media_kind,
                        i.media_bytes,
                        base_url=s.media_url,
                        scale=s.media_scale,
                    )
                ],
                score=i.score if debug else None,
            )
            for k, i in enumerate(items)
        ]

    def _stored_renditions(
        self, post_ids: Sequence[int], degraded: list[str]
    ) -> dict[int, list[Rendition]]:
        """The renditions the upload tier stored for the uploaded posts among ``post_ids``
        (none on most pages: one LRU lookup each, Cassandra on a miss)."""
        uploaded = self._with_real_media(post_ids)
        if not uploaded:
            return {}
        try:
            found = self.stored_media.get(uploaded, self.s.deadline_candidates_ms / 1000)
        except Exception as exc:  # drawn without renditions, and said so
            log.warning("renditions of %d uploaded posts unreadable: %s", len(uploaded), exc)
            if "media" not in degraded:
                degraded.append("media")
                self.metrics.degraded("media")
            return {p: [] for p in uploaded}
        url = self.s.media_url
        return {
            p: [Rendition.model_construct(**r.item(url)) for r in rs] for p, rs in found.items()
        }

    def _with_real_media(self, post_ids: Sequence[int]) -> list[int]:
        """The posts among ``post_ids`` whose media the media tier stored: uploads, and world
        posts the demo rendered (their rows say so: ``MediaCache``)."""
        media = self.prefetch.media
        return [p for p in post_ids if ids.is_upload_id(p) or media.has_stored(p)]

    def _warm_targets(self, post_ids: Sequence[int]) -> dict[int, tuple[str, int]]:
        """For the prefetcher: the stored rendition a client draws first (the widest, in the
        smallest format) of each post with real media, as (path, bytes); {} when unreadable
        (the simulated objects are warmed instead, which the edge does not have)."""
        real = self._with_real_media(post_ids)
        if not real:
            return {}
        try:
            found = self.stored_media.get(real, self.s.cassandra_request_timeout_s)
        except Exception as exc:
            log.warning("renditions to warm unreadable: %s", exc)
            return {}
        return first_drawn(found)

    def _check_media_epoch(self) -> None:
        """Every ``takedown_refresh_s``, off the request path: when the media tier stored
        renditions for posts that had none, forget what this replica knew of posts' media."""
        epoch, ok = self._media_counter.get()
        if not ok or epoch == self._media_epoch:
            return
        if self._media_epoch is not None or epoch is not None:
            self.prefetch.media.clear()
            self.stored_media.clear()
        self._media_epoch = epoch

    def _features(
        self,
        user_id: int,
        posts: np.ndarray,
        authors: np.ndarray,
        topics: np.ndarray,
        now: datetime,
        request_id: str,
        degraded: list[str],
    ) -> np.ndarray:
        """The posts' feature rows; every feature unknown when the online store fails."""
        if not len(posts):
            return ranking.unknown_features(0)
        feats, ok = self.redis_breaker.call(
            lambda: self.reader.read(
                user_id, posts.tolist(), authors.tolist(), topics.tolist(), now.timestamp()
            ),
            None,
            lambda exc: log.warning("features unavailable for %s: %s", request_id, exc),
        )
        if ok and feats is not None:
            return feats
        if "features" not in degraded:
            degraded.append("features")
            self.metrics.degraded("features")
        return ranking.unknown_features(len(posts))

    def _rank(
        self,
        b: ranking.Batch,
        cands: candidates.Candidates,
        followed: frozenset[int],
        rankers: Rankers | None,
        degraded: list[str],
    ) -> tuple[np.ndarray, str]:
        """Session rows in the light ranker's order, the top ``light_keep`` heavy-scored; with
        the current pair, else the previous one, else the heuristic (each fallback named)."""
        order, scores, dwell, label = self._order(b, followed, rankers, degraded)
        in_net = (
            np.isin(cands.author, np.fromiter(followed, np.int64, len(followed)))
            if followed
            else np.zeros(len(cands), bool)
        )
        rows = sessions.pack(
            b.post_ids[order],
            b.author_ids[order],
            cands.created_ms[order] / 1000.0,
            b.topics[order],
            cands.source[order],
            in_net[order],
        )
        rows["score"][: len(scores)] = scores
        rows["dwell"][: len(dwell)] = dwell
        return rows, label

    def _order(
        self,
        b: ranking.Batch,
        followed: frozenset[int],
        rankers: Rankers | None,
        degraded: list[str],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
        s, m = self.s, self.metrics
        for pair in (rankers, self.models.previous):
            if pair is None:
                continue
            try:
                t = time.perf_counter()
                order = ranking.light_order(pair, b) if len(b) else np.zeros(0, np.int64)
                m.observe_stage("light", time.perf_counter() - t)
                t = time.perf_counter()
                top = order[: s.light_keep]
                scores, dwell = (
                    ranking.heavy_blend(pair, ranking.subset(b, top), s.blend_weights)
                    if len(top)
                    else (np.zeros(0), np.zeros(0))
                )
                m.observe_stage("heavy", time.perf_counter() - t)
                if pair is not rankers:
                    degraded.append("model")
                    m.degraded("model")
                return order, scores, dwell, pair.label
            except Exception as exc:
                log.warning("model %s failed: %s", pair.label, exc)
        degraded.append("model")
        m.degraded("model")
        h = ranking.heuristic_scores(b, followed)
        order = np.argsort(-h, kind="stable")
        return order, h[order], np.zeros(0), ranking.HEURISTIC_LABEL

    def _extend(self, sess: sessions.FeedSession, degraded: list[str]) -> None:
        """Heavy-score the next ``light_keep`` rows of the session (its light order), so that a
        page past the scored part is ranked like the first; stored for the next pages."""
        start = sess.scored_until()
        stop = min(len(sess.rows), start + self.s.light_keep)
        r = sess.rows[start:stop]
        # Contiguous copies: a field of the packed records is a strided view.
        posts, authors = np.ascontiguousarray(r["post"]), np.ascontiguousarray(r["author"])
        topics = r["topic"].astype(np.int64)
        now = datetime.now(UTC)
        feats = self._features(sess.user_id, posts, authors, topics, now, "extend", degraded)
        b = ranking.Batch(sess.user_id, posts, authors, topics, feats)
        pair = self.models.current
        try:
            if pair is None:
                raise RuntimeError("no model loaded")
            scores, dwell = ranking.heavy_blend(pair, b, self.s.blend_weights)
        except Exception as exc:  # below every scored row, in light order
            log.warning("extending session %s: %s", sess.session_hex, exc)
            if "model" not in degraded:
                degraded.append("model")
                self.metrics.degraded("model")
            floor = float(np.nanmin(sess.rows["score"][:start])) if start else 0.0
            scores = floor - 1.0 - np.arange(len(r), dtype=np.float64)
            dwell = np.full(len(r), np.nan)
        sess.rows["score"][start:stop] = scores
        sess.rows["dwell"][start:stop] = dwell
        self._redis_call("session rows", lambda: self.store.put_rows(sess), None)

    def _with_media(
        self, sess: sessions.FeedSession, rows: Sequence[int], degraded: list[str]
    ) -> list[sessions.PageItem]:
        """The page's rows with their media (per-replica LRU, else Cassandra under the
        candidates' deadline); unknown media when the store cannot say."""
        posts = [int(sess.rows["post"][k]) for k in rows]
        media: dict[int, tuple[str, int]] = {}
        if posts:
            try:
                media = self.prefetch.media.get(posts, self.s.deadline_candidates_ms / 1000)
            except Exception as exc:
                log.warning("media of %s's page unreadable: %s", sess.user_id, exc)
                degraded.append("media")
                self.metrics.degraded("media")
        return [
            sessions.PageItem(k, *media.get(p, ("", 0))) for k, p in zip(rows, posts, strict=True)
        ]

    def _fallback_page(
        self,
        user_id: int,
        limit: int,
        request_id: str,
        popular: list[cache.CachedItem],
        rankers: Rankers | None,
        degraded: list[str],
    ) -> FeedPage:
        """Cassandra is down: the user's last page from Redis, else the popular list (no
        session: nothing to continue from, so no cursor)."""
        raw, ok = self._redis_call(
            "page", lambda: self.redis.get(cache.page_key(self.s, user_id)), None
        )
        items = cache.load_items(raw)
        degraded.append("candidates")
        if not items:
            items = [replace(i, source="explore") for i in popular]
            degraded.append("popular")
        removed = self.removed.ids()
        if len(removed):  # Cassandra down: the takedowns this replica last read
            gone = np.isin([i.post_id for i in items], removed).tolist()
            items = [i for i, g in zip(items, gone, strict=True) if not g]
        if not ok:
            degraded.append("cache")
        self.metrics.session("unsaved")
        return FeedPage(
            user_id=user_id,
            items=self._items(items[:limit], False, degraded),
            next_cursor=None,
            session="new",
            page=0,
            model_version=rankers.label if rankers else ranking.HEURISTIC_LABEL,
            candidates=0,
            sources={},
            degraded=degraded,
            request_id=request_id,
        )

    # -- side work, off the response path ----------------------------------------------------
    def _after_page(self, served: Served) -> None:
        """Cache the page with the session's likely next page after it (the Cassandra-down
        fallback, and what impressions plan from), then warm the edge from both."""
        sess, items = served.session, served.items
        try:
            on = self.prefetch.enabled()
            later: list[cache.CachedItem] = []
            if on and items:  # unknown media when Cassandra cannot say: then it is not warmed
                later = _cached(
                    sess,
                    self._with_media(
                        sess,
                        # taken-down posts off it too, as the served next page has them
                        sessions.next_page(sess, len(items), self.rules, self.removed.ids()),
                        [],
                    ),
                )
            c = self._cache_page(sess.user_id, items + later, continuation=on)
            if c is not None and items:  # c: read when prefetch is on
                self.prefetch.on_page(items + later, c)
        except Exception:  # side work never raises into the executor unseen
            log.exception("side work after %s's page failed", sess.user_id)
            self.metrics.degraded("prefetch")

    def after_impressions(self, seen: list[Seen]) -> None:
        """Impressions were stored: roll the prefetch along (side work, never raises)."""
        try:
            self.prefetch.on_impressions(seen)
        except Exception:
            log.exception("prefetch after %d impressions failed", len(seen))
            self.metrics.degraded("prefetch")

    def _cache_page(
        self, user_id: int, items: list[cache.CachedItem], *, continuation: bool
    ) -> float | None:
        """Cache the page (when it has items) and, with ``continuation``, read the user's
        continuation rate for the prefetch in the same round trip (a Redis request costs the
        replica more CPU than what it carries); the rate, or None when not read."""
        s = self.s
        if not items and not continuation:
            return None

        def send() -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            if items:
                pipe.set(cache.page_key(s, user_id), cache.dump_items(items), ex=s.page_cache_ttl_s)
            if continuation:
                pipe.hmget(cache.continuation_key(s, user_id), SCROLL_FIELDS)
            return cast(list[Any], pipe.execute())

        out: list[Any]
        out, ok = self._redis_call("cache page", send, [])
        return continuation_of(out[-1] if ok else None, s) if continuation else None

    def _log_impressions(self, served: Served, degraded: list[str]) -> None:
        """Queue what was shown for the next burst of impression writes
        (``serving.impressions``; errors only logged and counted).

        ``position`` is the slot in the page; ``session_position`` the place in the session's
        ranking. The page is deterministic given its inputs, so each item's propensity is 1.
        """
        if not served.items:
            return
        try:
            self._connect()
        except Exception as exc:  # Cassandra down: the page is served, not logged
            log.warning("impressions of %s not logged: %s", served.request_id, exc)
            degraded.append("impressions")
            self.metrics.degraded("impressions")
            return
        if not self.impressions.healthy:  # the last burst failed: this page's likely will too
            degraded.append("impressions")
        sess = served.session
        now = datetime.now(UTC)
        day = day_bucket(now)
        rows = [
            (
                sess.user_id,
                day,
                now,
                served.request_id,
                pos,
                item.post_id,
                item.author_id,
                sess.model_version,
                item.score,
                1.0,
                sess.session_hex,
                served.page,
                served.offset + pos,
            )
            for pos, item in enumerate(served.items)
        ]
        self.impressions.add(impressions.Page(served.request_id, rows))
