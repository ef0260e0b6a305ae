"""Ingest over the API: engagement events and post uploads, idempotent by their ids.

Plain Python over a Cassandra session (no Ray): the app calls these, and so can a test.

- An event is *claimed* by its id with a lightweight transaction (``INSERT ... IF NOT EXISTS``);
  the interaction rows are written after the claim. A re-send of the same event finds the claim
  and writes the same rows again (upserts of the same keys): a crash between the two steps is
  healed by the client's retry, and nothing is counted twice. A re-send with *different*
  content is a conflict and changes nothing.
- A post is claimed the same way, then indexed by author and fanned out to its followers'
  timelines in the background, in batches; authors above the pull threshold are not fanned
  out (readers pull them). Fan-out writes are upserts, so a repeated upload repeats them safely.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from cassandra.cluster import Session
from cassandra.concurrent import execute_concurrent_with_args
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from core import context
from core.statements import Statements
from core.time import as_utc, day_bucket
from media.ids import FIRST_UPLOAD_ID

log = logging.getLogger("feedcast.serving.ingest")

MAX_CLOCK_SKEW = timedelta(minutes=5)


def _number(v: object) -> object:
    """JSON Schema's numbers: 7 and 7.0 are the integer 7; "7" and true are not numbers."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError("must be a JSON number")
    return v


Number = BeforeValidator(_number)
Id = Annotated[int, Field(ge=1, le=2**63 - 1), Number]
# Ids a client announces stay below the server-assigned upload ids (media.ids), so the two
# never meet.
AnnouncedId = Annotated[
    int,
    Field(
        ge=1,
        le=FIRST_UPLOAD_ID - 1,
        description="Chosen by the client, below 2^40; ids at or above are the upload tier's.",
    ),
    Number,
]


def _text(v: object) -> object:
    if not isinstance(v, str):
        raise ValueError("must be an RFC 3339 date-time string, e.g. 2026-01-01T12:00:00Z")
    return v


# A time as the schema says it: a string (never a number of seconds).
Timestamp = Annotated[datetime, BeforeValidator(_text)]


class _EventBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: str = Field(
        min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$", description="Idempotency key."
    )
    user_id: Id
    post_id: Id
    author_id: Id | None = Field(None, description="The post's author, when the app knows it.")
    ts: Timestamp = Field(
        description="When it happened (RFC 3339 with a zone); not later than the server's "
        "clock plus 5 minutes."
    )

    @model_validator(mode="after")
    def _when(self) -> _EventBase:
        if self.ts.tzinfo is None:
            raise ValueError("ts needs a time zone (e.g. 2026-01-01T12:00:00Z)")
        if self.ts > datetime.now(UTC) + MAX_CLOCK_SKEW:
            raise ValueError("ts is in the future")
        return self


class ImpressionEvent(_EventBase):
    """The post was on screen."""

    kind: Literal["impression"]
    position: Annotated[int, Field(ge=0, le=999), Number] | None = Field(
        None,
        description="The item's slot in the page it was served on (0 = top): the `position` "
        "of the feed item. It moves the prefetch along as the user scrolls; absent, the "
        "service looks the post up in the user's last served page.",
    )
    dwell_s: None = Field(None, description="Dwell events only.")


class DwellEvent(_EventBase):
    """How long the post stayed on screen."""

    kind: Literal["dwell"]
    dwell_s: Annotated[float, Number] = Field(gt=0, le=3600, description="Seconds on screen.")
    position: None = Field(None, description="Impression events only.")


class EngagementEvent(_EventBase):
    """A like, comment or save."""

    kind: Literal["like", "comment", "save"]
    dwell_s: None = Field(None, description="Dwell events only.")
    position: None = Field(None, description="Impression events only.")


# One event from the app: its kind says which fields it has (an OpenAPI oneOf on `kind`).
Event = Annotated[ImpressionEvent | DwellEvent | EngagementEvent, Field(discriminator="kind")]
MAX_EVENTS = 100  # per batch: 100 of the longest events stay under the default body limit


class EventBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[Event] = Field(min_length=1, max_length=MAX_EVENTS)


class EventResult(BaseModel):
    accepted: int = Field(ge=0, le=MAX_EVENTS, description="Events stored for the first time.")
    duplicates: int = Field(
        ge=0, le=MAX_EVENTS, description="Re-sent events, recognised by id (stored once)."
    )
    conflicts: list[str] = Field(description="Ids already stored with different content.")


class PostIn(BaseModel):
    """An upload announcement."""

    model_config = ConfigDict(extra="forbid")

    post_id: AnnouncedId
    author_id: Id
    topic: Annotated[int, Number] = Field(ge=0, le=1023)
    media_kind: Literal["photo", "video"]
    media_bytes: Annotated[int, Number] = Field(ge=1, le=2**31 - 1)
    created_at: Timestamp | None = Field(None, description="Upload time; default now.")

    @model_validator(mode="after")
    def _not_future(self) -> PostIn:
        if self.created_at is not None:
            if self.created_at.tzinfo is None:
                raise ValueError("created_at needs a time zone")
            if self.created_at > datetime.now(UTC) + MAX_CLOCK_SKEW:
                raise ValueError("created_at is in the future")
        return self


class PostResult(BaseModel):
    post_id: Id
    status: Literal["created", "duplicate"]
    fanout: Literal["queued", "pull"] = Field(
        description="queued: written to followers' timelines in the background; pull: the "
        "author is big, readers pull the post at read time."
    )


class ConflictError(ValueError):
    """The id is already stored with different content."""


def _same_event(row: object, e: Event) -> bool:
    return (
        getattr(row, "user_id", None) == e.user_id
        and getattr(row, "post_id", None) == e.post_id
        and getattr(row, "kind", None) == e.kind
        and as_utc(getattr(row, "event_ts", datetime.min)) == _ms(e.ts)
        and getattr(row, "dwell_s", None) == e.dwell_s
    )


def _ms(ts: datetime) -> datetime:
    """Cassandra keeps milliseconds: compare at that precision."""
    ts = ts.astimezone(UTC)
    return ts.replace(microsecond=ts.microsecond // 1000 * 1000)


def ingest_events(
    session: Session, stmts: Statements, events: list[Event], *, timeout_s: float, days: int = 3
) -> EventResult:
    """Claim every event by id, then write the interaction rows of the claimed and the re-sent."""
    return store_events(session, stmts, events, timeout_s=timeout_s, days=days)[0]


def store_events(
    session: Session, stmts: Statements, events: list[Event], *, timeout_s: float, days: int
) -> tuple[EventResult, list[Event]]:
    """:func:`ingest_events`, and the events stored for the first time (not the re-sent)."""
    claims = execute_concurrent_with_args(
        session,
        stmts.claim_event,
        [(e.event_id, e.user_id, e.post_id, e.kind, _ms(e.ts), e.dwell_s) for e in events],
        concurrency=32,
        raise_on_first_error=True,
    )
    new, dup, conflicts, write, fresh = 0, 0, [], [], []
    seen: set[str] = set()
    for e, (_, rows) in zip(events, claims, strict=True):
        if e.event_id in seen:  # the same id twice in one batch
            dup += 1
            continue
        seen.add(e.event_id)
        if rows.was_applied:
            new += 1
            fresh.append(e)
        elif _same_event(rows.one(), e):
            dup += 1
        else:
            conflicts.append(e.event_id)
            continue
        write.append(e)
    ts = [_ms(e.ts) for e in write]
    execute_concurrent_with_args(
        session,
        stmts.insert_event_by_user,
        [
            (e.user_id, day_bucket(t), t, e.event_id, e.post_id, e.author_id, e.kind, e.dwell_s)
            for e, t in zip(write, ts, strict=True)
        ],
        concurrency=32,
    )
    execute_concurrent_with_args(
        session,
        stmts.insert_event_by_post,
        [
            (e.post_id, t, e.event_id, e.user_id, e.kind, e.dwell_s)
            for e, t in zip(write, ts, strict=True)
        ],
        concurrency=32,
    )
    # The readers' context: posts engaged with leave their next first pages (core.context).
    context.add_engaged(
        session,
        stmts,
        [(e.user_id, e.post_id, context.to_ms(t)) for e, t in zip(write, ts, strict=True)],
        now_ms=context.to_ms(datetime.now(UTC)),
        days=days,
    )
    return EventResult(accepted=new, duplicates=dup, conflicts=conflicts), fresh


@dataclass(frozen=True)
class Claimed:
    post: PostIn
    created_at: datetime
    created: bool
    pull: bool


def claim_post(
    session: Session, stmts: Statements, post: PostIn, *, pull_threshold: int, timeout_s: float
) -> Claimed:
    """Store the post once (by id) and index it by author; raise ConflictError or LookupError."""
    author = session.execute(stmts.get_user, (post.author_id,), timeout=timeout_s).one()
    if author is None:
        raise LookupError(f"unknown author_id {post.author_id}")
    created_at = _ms(post.created_at or datetime.now(UTC))
    rs = session.execute(
        stmts.claim_post,
        (post.post_id, post.author_id, created_at, post.topic, post.media_kind, post.media_bytes),
        timeout=timeout_s,
    )
    created = bool(rs.was_applied)
    if not created:
        res = rs.one()
        same = (
            res.author_id == post.author_id
            and res.topic == post.topic
            and res.media_kind == post.media_kind
            and res.media_bytes == post.media_bytes
            and (post.created_at is None or as_utc(res.created_at) == created_at)
        )
        if not same:
            raise ConflictError(f"post_id {post.post_id} exists with different content")
        created_at = as_utc(res.created_at)
    session.execute(
        stmts.insert_post_by_author,
        (post.author_id, day_bucket(created_at), created_at, post.post_id, post.topic),
        timeout=timeout_s,
    )
    pull = (author.follower_count or 0) > pull_threshold
    return Claimed(post, created_at, created, pull)


Written = Callable[[list[int], tuple[int, int, int, int]], None]
"""Told after each batch of a fan-out: the followers written to and the post's row."""


def fan_out(
    session: Session,
    stmts: Statements,
    c: Claimed,
    *,
    days: int,
    written: Written | None = None,
    batch: int = 200,
) -> int:
    """Write the post into every follower's recent timeline (``feed_by_user``, with the TTL
    left of the ``days`` window), ``batch`` followers at a time; ``written(followers, row)``
    after each batch, ``row`` being (post, author, created_ms, topic): the replica puts it at
    the head of their cached timelines."""
    if c.pull:
        return 0
    p, done = c.post, 0
    created_ms = context.to_ms(c.created_at)
    ttl = context.ttl_s(created_ms, context.to_ms(datetime.now(UTC)), days)
    if ttl <= 0:  # older than the window: no timeline would show it
        return 0
    row = (p.post_id, p.author_id, created_ms, p.topic or 0)
    told = None if written is None else lambda followers: written(followers, row)
    rows = session.execute(stmts.followers_of, (p.author_id,))  # pages through large lists
    chunk: list[tuple[object, ...]] = []
    for r in rows:
        chunk.append((r.follower_id, created_ms, p.post_id, p.author_id, p.topic, ttl))
        if len(chunk) == batch:
            _write_feed(session, stmts, chunk, told)
            done, chunk = done + len(chunk), []
    if chunk:
        _write_feed(session, stmts, chunk, told)
        done += len(chunk)
    log.info("fanned out post %s to %d timelines", p.post_id, done)
    return done


def _write_feed(
    session: Session,
    stmts: Statements,
    rows: list[tuple[object, ...]],
    written: Callable[[list[int]], None] | None,
) -> None:
    execute_concurrent_with_args(
        session, stmts.insert_feed, rows, concurrency=32, raise_on_first_error=True
    )
    if written is not None:
        written([int(str(r[0])) for r in rows])
