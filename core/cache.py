"""Redis client and the key layout of everything feedcast keeps in Redis besides Feast's rows.

Keys are namespaced by the Feast project, so the demo, a test run and an evaluation never read
each other's pages. Every key is a single-slot key: the layout works unchanged on Redis Cluster.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from core.breaker import Breaker
from core.settings import Settings


class BreakerOpen(redis.ConnectionError):
    """Not sent: Redis failed lately and the breaker skips it (callers degrade as for a
    refused connection)."""


class GuardedRedis(redis.Redis):
    """A client whose every command and pipeline goes through a :class:`Breaker`: a connection
    error or timeout opens it, and while it is open commands fail at once with
    :class:`BreakerOpen` instead of waiting for a hung Redis."""

    breaker: Breaker

    def execute_command(self, *args: Any, **options: Any) -> Any:
        return _guarded(
            self.breaker, lambda: super(GuardedRedis, self).execute_command(*args, **options)
        )

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)
        plain = pipe.execute
        breaker = self.breaker
        # An instance attribute over the method: the pipeline is this client's own object.
        pipe.execute = lambda raise_on_error=True: _guarded(  # type: ignore[method-assign]
            breaker, lambda: plain(raise_on_error)
        )
        return pipe


def _guarded(breaker: Breaker, call: Any) -> Any:
    if not breaker.acquire():
        raise BreakerOpen("Redis skipped: it failed within the breaker's cool-down")
    try:
        out = call()
    except (redis.ConnectionError, redis.TimeoutError):
        breaker.failure()
        raise
    except BaseException:
        breaker.success()  # Redis answered (with an error of the command's own)
        raise
    breaker.success()
    return out


def client(
    settings: Settings, *, timeout_s: float | None = None, breaker: Breaker | None = None
) -> redis.Redis:
    """A Redis client with explicit socket and connect timeouts (redis-py waits forever) and
    no retries; behind ``breaker`` when given (:class:`GuardedRedis`)."""
    t = timeout_s or settings.redis_timeout_s
    r = (GuardedRedis if breaker is not None else redis.Redis)(
        host=settings.redis_host,
        port=settings.redis_port,
        db=settings.redis_db,
        socket_timeout=t,
        socket_connect_timeout=t,
        # redis-py retries 3 times with a backoff from 1 s by default: a dead Redis would cost
        # seconds per call. One try; callers degrade (and their breakers skip Redis a while).
        retry=Retry(NoBackoff(), 0),
        health_check_interval=30,
    )
    if breaker is not None:
        r.breaker = breaker  # type: ignore[attr-defined]
    return r


def page_key(settings: Settings, user_id: int) -> str:
    """The last page served to ``user_id``: what Cassandra being down falls back to."""
    return f"feedcast:{settings.feast_project}:page:{user_id}"


def timeline_key(settings: Settings, user_id: int) -> str:
    """A copy of the user's recent timeline (``serving.candidates.TimelineCache``)."""
    return f"feedcast:{settings.feast_project}:timeline:{user_id}"


def context_key(settings: Settings, user_id: int) -> str:
    """A copy of the user's read context (``serving.candidates.ContextCache``)."""
    return f"feedcast:{settings.feast_project}:context:{user_id}"


def popular_key(settings: Settings) -> str:
    """Recent popular posts: the explore candidate source and the last-resort page."""
    return f"feedcast:{settings.feast_project}:popular"


def continuation_key(settings: Settings, user_id: int) -> str:
    """A hash of the user's scrolling counts (``starts``, ``continues``): impressions at the top
    of a page and further down, from which the prefetch planner's continuation rate comes."""
    return f"feedcast:{settings.feast_project}:scroll:{user_id}"


def prefetch_switch_key(settings: Settings) -> str:
    """``off`` here turns the serving prefetch off on every replica, without a redeploy."""
    return f"feedcast:{settings.feast_project}:prefetch:switch"


def takedown_epoch_key(settings: Settings) -> str:
    """Bumped by every takedown: the feed replicas re-read ``posts_removed`` when it changed
    (``serving.takedown.RemovedPosts``)."""
    return f"feedcast:{settings.feast_project}:takedown-epoch"


def media_epoch_key(settings: Settings) -> str:
    """Bumped when the media tier stores renditions for posts that had none (the demo's world
    photos): every replica then forgets what it remembered of posts' media."""
    return f"feedcast:{settings.feast_project}:media-epoch"


@dataclass(frozen=True)
class CachedItem:
    """One post of a cached page or of the popular list.

    The media fields and E[dwell] are known for served pages (the prefetch plans from them);
    other lists leave them at their defaults, and values written before they existed load.
    """

    post_id: int
    author_id: int
    topic: int
    created_epoch_s: float
    score: float
    media_kind: str = ""  # "photo" or "video"; "" when unknown
    media_bytes: int = 0  # the ``full`` object's simulated size; 0 when unknown
    e_dwell_s: float | None = None  # the heavy ranker's expected dwell, when it scored the item
    source: str = ""  # "timeline", "pull" or "explore"; "" when unknown


_ITEM_FIELDS = tuple(f.name for f in fields(CachedItem))


def dump_items(items: list[CachedItem]) -> bytes:
    """JSON objects of the items' fields (``dataclasses.asdict`` gives the same bytes at ~5x
    the cost: it deep-copies every value; this runs after every page)."""
    return json.dumps(
        [{name: getattr(i, name) for name in _ITEM_FIELDS} for i in items], separators=(",", ":")
    ).encode()


def load_items(raw: object) -> list[CachedItem]:
    """Items from a cached value; an absent or unreadable value is an empty list."""
    if not isinstance(raw, bytes | str) or not raw:
        return []
    try:
        return [CachedItem(**row) for row in json.loads(raw)]
    except (ValueError, TypeError):
        return []
