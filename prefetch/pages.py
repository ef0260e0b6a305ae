r"""Planning over cached feed pages, shared by the serving hook and the ahead-of-session job.

- :class:`MediaCache`: ``post_id`` → (media_kind, media_bytes) from ``posts_by_id``, behind an
  LRU (media never changes after upload);
- :func:`continuation`: a user's continuation rate from their scrolling counts (Redis hash
  ``core.cache.continuation_key``): an impression at a page's top is a page *start*, one further
  down a *continue*, one at its last item an *end*. For geometric scroll depths the
  maximum-likelihood rate is continues / (continues + stops), stops = starts − ends (a page read
  to its end was not stopped: censored, as in ``simulator.trace``); it is shrunk towards
  ``prefetch_p_continue`` with a weight of ``prefetch_continue_prior`` pages, so a user
  without history gets the default;
- :func:`plan_items`: :func:`prefetch.planner.plan` over a page of ``CachedItem``\ s, with
  ``P(autoplay)`` from the heavy ranker's E[dwell] where the item carries it.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis
from cassandra.cluster import Session

from core import cache
from core.settings import Settings
from core.statements import Statements
from prefetch import planner

log = logging.getLogger(__name__)

MEDIA_LRU = 65_536  # posts whose media one process remembers (~10 MB)
STARTS, CONTINUES, ENDS = "starts", "continues", "ends"


def continuation(starts: int, continues: int, ends: int, prior: float, weight: float) -> float:
    """The user's continuation rate: continues / (continues + stops), shrunk to ``prior``.

    Stops are the pages started (``starts``) less those scrolled to their last item (``ends``):
    a user who reached the end of the page did not stop, they ran out of items (censored).
    """
    stops = max(starts - ends, 0)
    den = continues + stops + weight
    c = (continues + prior * weight) / den if den > 0 else prior
    return min(max(c, 0.0), 0.999)


SCROLL_FIELDS = [STARTS, CONTINUES, ENDS]  # the continuation hash's fields, as HMGET asks


def continuation_of(raw: Sequence[Any] | None, s: Settings) -> float:
    """The continuation rate from an HMGET of :data:`SCROLL_FIELDS` (None: Redis could not
    say, so the default)."""
    starts, conts, ends = (int(v or 0) for v in raw) if raw else (0, 0, 0)
    return continuation(starts, conts, ends, s.prefetch_p_continue, s.prefetch_continue_prior)


def read_continuation(r: redis.Redis, s: Settings, user_id: int) -> float:
    """The user's continuation rate from Redis; the default when Redis cannot say."""
    try:
        raw: Any = r.hmget(cache.continuation_key(s, user_id), SCROLL_FIELDS)
    except redis.RedisError as exc:
        log.warning("scroll counts unreadable for %s: %s", user_id, exc)
        raw = None
    return continuation_of(raw, s)


def plan_config(s: Settings) -> planner.PlanConfig:
    return planner.PlanConfig(
        threshold=s.prefetch_threshold,
        refresh_threshold=min(s.prefetch_refresh_threshold, s.prefetch_threshold),
        first_screen=s.prefetch_first_screen,
        lookahead=s.prefetch_lookahead,
        max_object_bytes=s.prefetch_max_object_bytes,
    )


def plan_items(
    s: Settings,
    items: Sequence[cache.CachedItem],
    p_continue: float,
    *,
    at: int | None,
    cfg: planner.PlanConfig | None = None,
    stored: Mapping[int, tuple[str, int]] | None = None,
) -> list[planner.WarmAction]:
    """The planner over a page of cached items; items of unknown media are never warmed;
    ``stored``: the real renditions to warm for posts that have them (:func:`planner.plan`)."""
    if not items:
        return []
    cfg = cfg or plan_config(s)
    # Unknown media keeps its position but weighs more than the cap: the planner skips it.
    too_big = cfg.max_object_bytes + 1
    default = s.prefetch_p_autoplay
    p_auto = [
        float(planner.p_autoplay_from_dwell(i.e_dwell_s)) if i.e_dwell_s else default for i in items
    ]
    return planner.plan(
        [i.post_id for i in items],
        [i.media_kind == "video" for i in items],
        [i.media_bytes if i.media_kind and i.media_bytes > 0 else too_big for i in items],
        p_continue,
        p_auto,
        at=at,
        budget_bytes=s.prefetch_budget_bytes,
        cfg=cfg,
        stored=stored,
    )


class MediaCache:
    """``post_id`` → (media_kind, media_bytes) from ``posts_by_id``, behind a per-replica LRU."""

    def __init__(self, s: Settings, db: Callable[[], tuple[Session, Statements]]) -> None:
        self.s, self._db = s, db
        self._lru: OrderedDict[int, tuple[str, int]] = OrderedDict()
        self._stored: set[int] = set()  # posts of the world whose photo the media tier stored
        self._lock = threading.Lock()

    def has_stored(self, post_id: int) -> bool:
        """Whether the post's row, when read, said it has stored renditions (a world post the
        demo rendered, ``pipelines/world_media.py``)."""
        return post_id in self._stored

    def clear(self) -> None:
        """Forget everything (the stored media changed: ``media_epoch``)."""
        with self._lock:
            self._lru.clear()
            self._stored.clear()

    def get(
        self, post_ids: Sequence[int], timeout_s: float | None = None
    ) -> dict[int, tuple[str, int]]:
        """The media of ``post_ids`` that exist; Cassandra errors propagate. ``timeout_s``:
        limit on each read (default ``cassandra_request_timeout_s``)."""
        out: dict[int, tuple[str, int]] = {}
        with self._lock:
            for p in post_ids:
                if (hit := self._lru.get(p)) is not None:
                    out[p] = hit
        todo = [p for p in dict.fromkeys(post_ids) if p not in out]
        if not todo:
            return out
        session, stmts = self._db()
        stored: list[int] = []
        futures = [
            session.execute_async(
                stmts.get_post, (p,), timeout=timeout_s or self.s.cassandra_request_timeout_s
            )
            for p in todo
        ]
        for fut in futures:
            row = fut.result().one()
            if row is not None:
                out[int(row.post_id)] = (str(row.media_kind), int(row.media_bytes))
                if row.stored_media:
                    stored.append(int(row.post_id))
        with self._lock:
            self._stored.update(stored)
            for p in todo:
                if p in out:
                    self._lru[p] = out[p]
            while len(self._lru) > MEDIA_LRU:
                self._stored.discard(self._lru.popitem(last=False)[0])
        return out
