"""The media origin: serves each post's objects (``/media/{post_id}/{thumb|full}``) to the edge.

Sizes come from ``media.objects`` and the post's ``media_bytes`` in Cassandra, so the origin,
the simulator's trace and the planner agree on what an object weighs. The bytes themselves are
a deterministic pattern (not a decodable image or video), scaled by ``Settings.media_scale``: the
local origin serves a tenth of each object by default, so that loopback and disk are not what a
warming or replay run measures. Media never changes after upload, so the post sizes are kept in
a per-process LRU and responses say ``Cache-Control: public, max-age=86400``.

Run by the stack (``stack/origin.py``) as ``uvicorn media.origin:create_app --factory``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from cassandra import DriverException
from cassandra.cluster import Cluster, NoHostAvailable, Session
from cassandra.connection import ConnectionException
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from core.db import connect
from core.settings import Settings
from core.statements import Statements
from media import renditions
from media.blobs import BlobStore
from media.images import CONTENT_TYPES
from media.objects import VARIANTS, content_type, served_bytes, variant_bytes

log = logging.getLogger(__name__)

CHUNK = 64 * 1024  # bytes per streamed chunk: a multiple of the 64-byte pattern
LRU_POSTS = 65_536  # post sizes kept per process (~10 MB); media never changes once uploaded
RETRY_CONNECT_S = 2.0  # after a failed connect, answer 503 at once this long (no connect storm)
MAX_POST_ID = 2**63 - 1  # post_id is a CQL bigint
CACHE_CONTROL = "public, max-age=86400"
# A stored rendition's URL names its bytes (their SHA-256): they can never change under it.
IMMUTABLE = "public, max-age=31536000, immutable"
# What the driver raises when the post store cannot answer (down, timed out, not set up yet).
_DRIVER_ERRORS = (DriverException, NoHostAvailable, ConnectionException, OSError)


class StoreUnavailable(RuntimeError):
    """Cassandra could not answer a post lookup; the origin says 503 and the edge retries."""


def pattern(post_id: int, variant: str) -> bytes:
    """One chunk of the object's deterministic content: 64 bytes of its hash, repeated."""
    seed = hashlib.blake2b(f"{post_id}/{variant}".encode(), digest_size=64).digest()
    return seed * (CHUNK // len(seed))


@dataclass
class Counters:
    """What this process served; ``GET /stats`` shows them (one uvicorn worker, one count)."""

    requests: int = 0  # media requests answered 200 or 304
    bytes: int = 0  # body bytes streamed
    not_found: int = 0
    unavailable: int = 0


class PostSizes:
    """``post_id`` → (media_kind, media_bytes) from ``posts_by_id``, behind a small LRU.

    The Cassandra session is opened on first use, not at start: the origin may start before the
    keyspace exists, and a Cassandra that is down must turn into 503s, not a dead process.
    """

    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self._lru: OrderedDict[int, tuple[str, int]] = OrderedDict()
        self._cluster: Cluster | None = None
        self._session: Session | None = None
        self._stmts: Statements | None = None
        self._lock = asyncio.Lock()
        self._failed_at = float("-inf")

    async def get(self, post_id: int) -> tuple[str, int] | None:
        """The post's media, None if there is no such post; StoreUnavailable if Cassandra fails."""
        if (hit := self._lru.get(post_id)) is not None:
            self._lru.move_to_end(post_id)
            return hit
        session, stmts = await self._open()
        try:
            rows = await _execute(
                session, stmts.get_post, (post_id,), self.s.cassandra_request_timeout_s
            )
        except _DRIVER_ERRORS as exc:
            raise StoreUnavailable(f"post {post_id}: {exc!r}") from exc
        if not rows:
            return None  # not cached: the post may be uploaded a moment later
        row = rows[0]
        found = (str(row.media_kind), int(row.media_bytes))
        self._lru[post_id] = found
        if len(self._lru) > LRU_POSTS:
            self._lru.popitem(last=False)
        return found

    async def _open(self) -> tuple[Session, Statements]:
        async with self._lock:
            if self._session is not None and self._stmts is not None:
                return self._session, self._stmts
            if time.monotonic() - self._failed_at < RETRY_CONNECT_S:
                raise StoreUnavailable("Cassandra connect failed a moment ago; not retried yet")
            try:
                # The keyspace is set apart from the connect, so that a keyspace not created yet
                # fails after self._cluster is held, and close() shuts that cluster down.
                self._cluster, session = await asyncio.to_thread(connect, self.s, keyspace=None)
                await asyncio.to_thread(session.set_keyspace, self.s.cassandra_keyspace)
                self._stmts = await asyncio.to_thread(Statements, session, self.s)
                self._session = session
            except _DRIVER_ERRORS as exc:
                self._failed_at = time.monotonic()
                self.close()
                raise StoreUnavailable(f"cannot reach Cassandra: {exc!r}") from exc
            return self._session, self._stmts

    def close(self) -> None:
        if self._cluster is not None:
            self._cluster.shutdown()
        self._cluster = self._session = self._stmts = None


async def _execute(session: Session, stmt: Any, args: tuple[Any, ...], timeout_s: float) -> Any:
    """Run a prepared statement without blocking the event loop: the driver's own callbacks
    complete an asyncio future (a thread per request would cap the origin at the pool size)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Any] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if done.done():  # the request was cancelled (client went away)
            return
        if ok:
            done.set_result(value)
        else:
            done.set_exception(value)

    future = session.execute_async(stmt, args, timeout=timeout_s)
    future.add_callbacks(
        lambda rows: loop.call_soon_threadsafe(settle, True, rows),
        lambda exc: loop.call_soon_threadsafe(settle, False, exc),
    )
    return await done


def _error(status: int, message: str, **headers: str) -> PlainTextResponse:
    # no-store: the edge must not keep an error (a post uploaded a moment later would 404 on).
    return PlainTextResponse(
        message + "\n", status_code=status, headers={"Cache-Control": "no-store", **headers}
    )


def _parse(request: Request) -> tuple[int, str] | PlainTextResponse:
    raw_id, variant = request.path_params["post_id"], request.path_params["variant"]
    if variant not in VARIANTS:
        return _error(400, f"unknown media variant {variant!r}: expected one of {list(VARIANTS)}")
    if not raw_id.isdigit() or int(raw_id) > MAX_POST_ID:
        return _error(400, f"post id must be a non-negative 64-bit integer, not {raw_id!r}")
    return int(raw_id), variant


def create_app(settings: Settings | None = None) -> Starlette:
    """The origin's ASGI app; ``settings`` default to the ``FEEDCAST_*`` environment."""
    s = settings or Settings()
    posts = PostSizes(s)
    counters = Counters()

    async def media(request: Request) -> Response:
        parsed = _parse(request)
        if isinstance(parsed, Response):
            return parsed
        post_id, variant = parsed
        try:
            found = await posts.get(post_id)
        except StoreUnavailable as exc:
            counters.unavailable += 1
            log.warning("post %d: Cassandra unavailable: %s", post_id, exc)
            return _error(503, "post store unavailable, retry shortly", **{"Retry-After": "1"})
        if found is None:
            counters.not_found += 1
            return _error(404, f"no post {post_id}")
        media_kind, media_bytes = found
        size = served_bytes(variant_bytes(post_id, media_bytes, variant), s.media_scale)
        headers = {
            "Content-Length": str(size),
            "ETag": f'"{post_id}-{variant}-{size}"',
            "Cache-Control": CACHE_CONTROL,
        }
        counters.requests += 1
        kind = content_type(media_kind, variant)
        if request.headers.get("if-none-match") == headers["ETag"]:
            del headers["Content-Length"]
            return Response(status_code=304, headers=headers)
        if request.method == "HEAD":
            return Response(media_type=kind, headers=headers)
        return StreamingResponse(
            _body(pattern(post_id, variant), size, counters), media_type=kind, headers=headers
        )

    blobs = BlobStore(s.blob_store_url)

    async def rendition(request: Request) -> Response:
        """``/media/r/<sha256>.<jpg|webp|avif>``: a stored rendition's exact bytes."""
        parsed = renditions.parse_name(request.path_params["name"])
        if parsed is None:
            counters.not_found += 1
            return _error(404, "not a rendition name: <sha256>.jpg, .webp or .avif")
        digest, fmt = parsed
        etag = f'"{digest}"'
        headers = {"ETag": etag, "Cache-Control": IMMUTABLE}
        if request.headers.get("if-none-match") == etag:
            counters.requests += 1
            return Response(status_code=304, headers=headers)
        try:
            data = await asyncio.to_thread(blobs.get, digest)
        except FileNotFoundError:
            data = b""
        except OSError as exc:
            counters.unavailable += 1
            log.warning("rendition %s: blob store unavailable: %s", digest, exc)
            return _error(503, "blob store unavailable, retry shortly", **{"Retry-After": "1"})
        if not data or not renditions.matches_format(data, fmt):
            counters.not_found += 1
            return _error(404, f"no {fmt} rendition {digest}")
        counters.requests += 1
        counters.bytes += len(data)
        kind = CONTENT_TYPES[fmt]
        if request.method == "HEAD":
            return Response(media_type=kind, headers={**headers, "Content-Length": str(len(data))})
        return Response(data, media_type=kind, headers=headers)

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok", "service": "feedcast-origin"})

    async def stats(_: Request) -> Response:
        return JSONResponse(vars(counters))

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        posts.close()

    return Starlette(
        routes=[
            Route("/media/r/{name}", rendition, methods=["GET", "HEAD"]),
            Route("/media/{post_id}/{variant}", media, methods=["GET", "HEAD"]),
            Route("/health", health),
            Route("/stats", stats),
        ],
        lifespan=lifespan,
    )


async def _body(chunk: bytes, size: int, counters: Counters) -> AsyncIterator[bytes]:
    left = size
    while left > 0:
        part = chunk if left >= CHUNK else chunk[:left]
        yield part
        counters.bytes += len(part)
        left -= len(part)
