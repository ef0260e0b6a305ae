"""The Ray Serve application: the whole deployment graph in one file.

``build_app(AppArgs(...))`` binds the FastAPI ingress deployment; ``feedcast serve`` runs it, and
``serving/serve_config.yaml`` describes the same app for ``serve run`` / ``serve deploy``.

Every replica is stateless apart from caches it can lose: rate limits and pages live in Redis,
everything else in Cassandra, so replicas can run on many nodes.
"""

# No `from __future__ import annotations`: FastAPI resolves these annotations at runtime, and
# Ray Serve's class ingress cannot resolve string forward references.

import asyncio
import logging
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import FastAPI, File, Form, HTTPException, Path, Query, Request, Response, UploadFile
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from ray import serve
from ray._private.ray_constants import WORKER_PROCESS_SETUP_HOOK_ENV_VAR
from ray.serve import Application

from core import cache
from core.breaker import Breaker
from core.db import connect
from core.settings import Settings
from core.statements import Statements
from media import ids, images
from media.blobs import BlobStore
from media.renditions import RenditionStore
from serving import ingest, startup, storage, takedown, uploads
from serving.autoscaling import POLICY, load_plan, load_upload_plan, upload_autoscaling
from serving.candidates import TimelineCache
from serving.cursor import MAX_CURSOR_CHARS, CursorError
from serving.feed import I64, FeedPage, FeedPath, Rendition
from serving.metrics import json_logging, request_context
from serving.security import ApiKeys, BodyLimit, RateLimiter
from serving.warming import Seen

log = logging.getLogger("feedcast.serving")

api = FastAPI(
    title="feedcast",
    description="Ranked feed pages from engagement models served on Ray Serve. Every /v1 route "
    "needs an API key in the X-API-Key header.",
    version="1",
)


class Guard:
    """ASGI middleware in front of every ``/v1`` route, before any body is read or validated:
    API key (401), per-key rate limit shared through Redis (429, with Retry-After), body size
    (413). ``/healthz`` and the OpenAPI document stay open.

    The frozen app Ray Serve ships to a replica carries this class by reference; the replica's
    constructor hands it the keys and limiter it built from its settings (:func:`arm`).
    """

    keys: ApiKeys | None = None
    limiter: RateLimiter | None = None
    metrics: Any = None
    rate_per_s: float = 0.0
    max_bytes: int = 64 * 1024

    upload_max_bytes: int = 20_000_000

    def __init__(self, app: Any, max_bytes: int = 64 * 1024) -> None:
        self.app = app
        self.limited = BodyLimit(app, max_bytes)
        self.upload_limited = BodyLimit(app, Guard.upload_max_bytes)  # its own, larger limit

    @classmethod
    def arm(cls, settings: Settings, metrics: Any, redis_breaker: Breaker | None = None) -> None:
        cls.keys, cls.limiter = (
            ApiKeys(settings.api_key_hashes),
            RateLimiter.from_settings(settings, breaker=redis_breaker),
        )
        cls.metrics, cls.rate_per_s = metrics, settings.rate_limit_per_s
        cls.max_bytes = settings.max_body_bytes
        cls.upload_max_bytes = settings.upload_max_bytes

    async def __call__(self, scope: Any, receive: Any, plain_send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, plain_send)
            return
        metrics = Guard.metrics

        async def send(message: Any) -> None:  # every /v1 answer is counted by its status
            if metrics is not None and message["type"] == "http.response.start":
                metrics.status(message["status"])
            await plain_send(message)

        keys, limiter = Guard.keys, Guard.limiter
        if keys is None or limiter is None:
            await _reply(scope, receive, send, 503, "starting up", {"Retry-After": "1"})
            return
        headers = dict(scope["headers"])
        key_id = keys.identify((headers.get(b"x-api-key") or b"").decode("latin-1") or None)
        if key_id is None:
            await _reply(
                scope,
                receive,
                send,
                401,
                "missing or invalid API key (X-API-Key header)",
                {"WWW-Authenticate": "ApiKey"},
            )
            return
        decision = await asyncio.to_thread(limiter.allow, key_id)  # Redis: off the event loop
        if decision.degraded:
            Guard.metrics.degraded("rate_limit")
        if not decision.allowed:
            Guard.metrics.rate_limited(key_id)
            detail = f"rate limit of {Guard.rate_per_s:g} requests/s exceeded"
            await _reply(scope, receive, send, 429, detail, decision.headers())
            return
        scope.setdefault("state", {})["key_id"] = key_id  # the upload quota is per key
        if scope["path"] == "/v1/uploads" and scope.get("method") == "POST":
            self.upload_limited.max_bytes = Guard.upload_max_bytes
            await self.upload_limited(scope, receive, send)
            return
        self.limited.max_bytes = Guard.max_bytes
        await self.limited(scope, receive, send)


async def _reply(
    scope: Any, receive: Any, send: Any, status: int, detail: str, headers: dict[str, str]
) -> None:
    await JSONResponse({"detail": detail}, status_code=status, headers=headers)(
        scope, receive, send
    )


api.add_middleware(Guard)


def _openapi() -> dict[str, Any]:
    """FastAPI's document, plus what the Guard enforces: the API key on every /v1 route."""
    if api.openapi_schema is None:
        doc = get_openapi(
            title=api.title, version=api.version, description=api.description, routes=api.routes
        )
        doc.setdefault("components", {})["securitySchemes"] = {
            "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}
        }
        _integer_bounds(doc)
        # FastAPI's validation error: a ``loc`` step is a field name or an index (≥ 0).
        loc = doc["components"]["schemas"]["ValidationError"]["properties"]["loc"]["items"]
        for alt in loc.get("anyOf", []):
            if alt.get("type") == "integer":
                alt.update(minimum=0, maximum=2**31 - 1)
        for path, ops in doc["paths"].items():
            if path.startswith("/v1/"):
                for op in ops.values():
                    op["security"] = [{"ApiKey": []}]
        api.openapi_schema = doc
    return api.openapi_schema


def _integer_bounds(node: Any) -> None:
    """FastAPI's document models hold bounds as floats: 2**63 - 1 comes out as 2.0**63, one
    past what a CQL bigint (and the validation) takes. Put integer bounds back as integers."""
    if isinstance(node, dict):
        if node.get("type") == "integer":
            for k in ("minimum", "maximum"):
                if isinstance(node.get(k), float):
                    node[k] = min(int(node[k]), I64) if k == "maximum" else int(node[k])
        for v in node.values():
            _integer_bounds(v)
    elif isinstance(node, list):
        for v in node:
            _integer_bounds(v)


api.openapi = _openapi  # type: ignore[method-assign]
_NO_SCORE = {"items": {"__all__": {"score"}}}  # the score is shown with debug=true only


class Problem(BaseModel):
    """Every error but a validation error (422): what went wrong, in one sentence."""

    detail: str


_ERRORS = {
    400: "The body is not valid JSON, the cursor is not this user's valid cursor, or the "
    "uploaded photo's header does not decode.",
    401: "Missing or invalid API key (X-API-Key header).",
    403: "The post is another author's.",
    404: "The user (for an upload: the author; for a takedown: the post) does not exist.",
    409: "The id is already stored with different content.",
    413: "The request body is larger than the configured limit (an upload: its own limit, "
    "or more pixels than the limit).",
    415: "The upload is not a JPEG, PNG or WebP image (judged from its bytes).",
    429: "The API key is over its rate limit (or its hourly upload quota); Retry-After says "
    "when to come back.",
    503: "Overloaded or a store is unavailable; nothing was stored. Retry-After says when.",
}


def _errors(*specific: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries of the errors a /v1 route can answer (``specific``: its own ones)."""
    codes = [401, 413, 429, 503, *specific]
    return {c: {"model": Problem, "description": _ERRORS[c]} for c in sorted(codes)}


class Pong(BaseModel):
    status: Literal["ok"] = "ok"


class UploadStatus(BaseModel):
    post_id: Annotated[int, Field(ge=ids.FIRST_UPLOAD_ID, le=2**63 - 1)]
    post_id_str: str = Field(description="`post_id` as a string, for clients whose numbers "
                             "stop at 2^53.")  # fmt: skip
    status: Literal["processing", "ready", "failed", "removed"]
    reason: str | None = Field(None, description="Why it failed.")
    placeholder: str | None = Field(
        None, description="A tiny WebP data URI to paint before the photo (when ready)."
    )
    renditions: list[Rendition] = Field(default_factory=list)


class Removed(BaseModel):
    post_id: Annotated[int, Field(ge=1, le=2**63 - 1)]
    status: Literal["removed"] = "removed"
    already: bool = Field(description="It was taken down before; nothing more was done.")
    blobs_trashed: int = Field(
        ge=0,
        le=10_000,
        description="Its stored objects no other post uses, now out of reach (deleted after "
        "the grace period).",
    )
    purged: int = Field(ge=0, le=10_000, description="Its media URLs the edge dropped.")
    purge_failed: int = Field(
        ge=0,
        le=10_000,
        description="Its media URLs the edge could not be asked to drop (the edge unreachable).",
    )
    delete_after: str | None = Field(
        None, description="When its blobs are deleted for good (RFC 3339, UTC)."
    )


class UploadAccepted(UploadStatus):
    status_url: str = Field(description="GET it for the status (processing, ready, failed).")
    duplicate: bool = Field(description="The same author uploaded the same bytes before: this "
                            "is that upload.")  # fmt: skip


_UPLOAD_ERRORS = {"unsupported_type": 415, "too_large": 413, "too_many_pixels": 413}


class AppArgs(BaseModel):
    """Arguments of :func:`build_app`: the settings the replicas run with."""

    settings: dict[str, Any] = Field(default_factory=dict)


def _unavailable(detail: str, retry_after_s: int = 1) -> JSONResponse:
    return JSONResponse(
        {"detail": detail}, status_code=503, headers={"Retry-After": str(retry_after_s)}
    )


def _upload_status(s: Settings, job: uploads.Job, store: RenditionStore) -> dict[str, Any]:
    out: dict[str, Any] = {
        "post_id": job.post_id,
        "post_id_str": str(job.post_id),
        "status": job.status,
        "reason": job.reason,
        "placeholder": job.placeholder,
        "renditions": [],
    }
    if job.status == "ready":
        out["renditions"] = [r.item(s.media_url) for r in store.get(job.post_id)]
    return out


def _rfc3339(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat().replace("+00:00", "Z")


@serve.deployment(ray_actor_options={"num_cpus": 0.5})
@serve.ingress(api)
class FeedService:
    def __init__(self, settings: dict[str, Any], uploader: Any = None) -> None:
        json_logging()  # one JSON object per line, with the request id inside a request
        self.settings = s = Settings(**settings)
        self.path = FeedPath(s)
        self.uploader = uploader  # the upload deployment's handle
        self.blobs = BlobStore(s.blob_store_url)
        self._jobs: uploads.Jobs | None = None
        self._renditions: RenditionStore | None = None
        self._ids: ids.IdMaker | None = None
        self._takedowns: takedown.Takedowns | None = None
        # Side work: upload fan-out, and after each page or impression the page cache + prefetch.
        self.background = ThreadPoolExecutor(max_workers=4, thread_name_prefix="side")
        Guard.arm(s, self.path.metrics, self.path.redis_breaker)
        startup.restore_priority()  # started at a lower CPU priority: now it serves
        log.info("feed service ready with %s", self.path.models_label())

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """``user_config: {model_alias: NAME}`` switches the alias served, without a restart."""
        self.path.set_alias(str(user_config.get("model_alias") or self.settings.model_alias))

    @api.get("/healthz")
    def healthz(self) -> dict[str, str]:
        return {"status": "ok", "model_version": self.path.models_label()}

    @api.get("/v1/ping", response_model=Pong, responses=_errors())
    def ping(self) -> Pong:
        """Checks the API key and its rate limit, and does nothing else: what a client calls to
        test its key, and the benchmark's floor for a /v1 request."""
        return Pong()

    @api.get(
        "/v1/feed/{user_id}",
        response_model=FeedPage,
        responses=_errors(400, 404),
        summary="A page of the user's ranked feed",
    )
    def feed(
        self,
        user_id: Annotated[int, Path(ge=1, le=I64, description="The reader.")],
        limit: Annotated[
            int | None, Query(ge=1, le=100, description="Items on the page (default: settings).")
        ] = None,
        cursor: Annotated[
            str | None,
            Query(
                max_length=MAX_CURSOR_CHARS,
                description="`next_cursor` of the previous page: the next page of that ranked "
                "session (never a post it served already; the same cursor twice gives the same "
                "page). Omitted: a first page, ranked now (pull-to-refresh). Another user's, "
                "an edited or a malformed cursor is a 400; an expired one a fresh first page "
                "with `session: restarted`.",
            ),
        ] = None,
        debug: Annotated[bool, Query(description="Include each item's ranking score.")] = False,
    ) -> Response:
        request_id = uuid.uuid4().hex
        try:
            with request_context(request_id):
                page = self.path.serve(
                    user_id,
                    limit or self.settings.feed_default_limit,
                    request_id,
                    self.background,
                    cursor_text=cursor,
                    debug=debug,
                )
        except CursorError as exc:
            raise HTTPException(400, str(exc)) from exc
        if page is None:
            raise HTTPException(404, f"unknown user_id {user_id}")
        body = page.model_dump_json(exclude=None if debug else _NO_SCORE)
        return Response(
            body,
            media_type="application/json",
            headers={"X-Model-Version": page.model_version, "X-Request-Id": page.request_id},
        )

    @api.post("/v1/events", response_model=ingest.EventResult, responses=_errors(400))
    def events(self, body: ingest.EventBatch) -> Any:
        """Engagement events, idempotent by ``event_id``; a 200 means every one is stored."""
        try:
            result, fresh = ingest.store_events(
                self.path.session(),
                self.path.stmts(),
                body.events,
                timeout_s=self.settings.cassandra_request_timeout_s,
                days=self.settings.timeline_days,
            )
        except Exception as exc:  # Cassandra unavailable: not acknowledged, the client retries
            log.warning("events not stored: %s", exc)
            self.path.metrics.degraded("events")
            return _unavailable(f"events not stored, retry: {type(exc).__name__}")
        # Engaged posts leave the users' next first pages: their context copies are stale.
        self.path.contexts.drop(sorted({e.user_id for e in body.events}))
        seen = [Seen(e.user_id, e.post_id, e.position) for e in fresh if e.kind == "impression"]
        if seen:  # the rolling prefetch, off the response path
            self.background.submit(self.path.after_impressions, seen)
        return result

    @api.post(
        "/v1/posts",
        response_model=ingest.PostResult,
        status_code=202,
        responses=_errors(400, 404, 409),
    )
    def posts(self, body: ingest.PostIn) -> Any:
        """An upload, idempotent by ``post_id``; fan-out to followers runs in the background."""
        s = self.settings
        try:
            session, stmts = self.path.session(), self.path.stmts()
            claimed = ingest.claim_post(
                session,
                stmts,
                body,
                pull_threshold=s.pull_follower_threshold,
                timeout_s=s.cassandra_request_timeout_s,
            )
        except ingest.ConflictError as exc:
            raise HTTPException(409, str(exc)) from exc
        except LookupError as exc:  # well formed, but the author does not exist
            raise HTTPException(404, str(exc)) from exc
        except Exception as exc:
            log.warning("post not stored: %s", exc)
            self.path.metrics.degraded("posts")
            return _unavailable(f"post not stored, retry: {type(exc).__name__}")
        if not claimed.pull:
            self.background.submit(
                ingest.fan_out,
                session,
                stmts,
                claimed,
                days=s.timeline_days,
                written=self.path.timelines.drop,
            )
        return ingest.PostResult(
            post_id=body.post_id,
            status="created" if claimed.created else "duplicate",
            fanout="pull" if claimed.pull else "queued",
        )

    @api.delete(
        "/v1/posts/{post_id}",
        response_model=Removed,
        responses=_errors(403, 404),
        summary="Take a post down (its author)",
    )
    def remove_post(
        self,
        post_id: Annotated[int, Path(ge=1, le=I64)],
        author_id: Annotated[
            int, Query(ge=1, le=I64, description="The author asking: must be the post's.")
        ],
    ) -> Any:
        """The post leaves every feed (within ``takedown_refresh_s`` on every replica) and its
        media the edge; its blobs are deleted after ``takedown_grace_s``. Idempotent."""
        try:
            if self._takedowns is None:  # made on first use: Cassandra may be down at start
                self._takedowns = takedown.Takedowns(
                    self.settings, self.path.session(), self.path.stmts(), self.blobs
                )
            done = self._takedowns.remove(post_id, author_id)
        except takedown.NotAuthor as exc:
            raise HTTPException(403, str(exc)) from exc
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from exc
        except Exception as exc:  # nothing half-done that a retry would not finish
            log.warning("takedown of %d not done: %s", post_id, exc)
            self.path.metrics.degraded("takedown")
            return _unavailable(f"takedown not done, retry: {type(exc).__name__}")
        self.path.removed.add(post_id)
        if done.purge_failed:
            self.path.metrics.degraded("edge_purge")
        after = done.delete_after_ms
        return Removed(
            post_id=post_id,
            already=done.already,
            blobs_trashed=done.blobs_trashed,
            purged=done.purged,
            purge_failed=done.purge_failed,
            delete_after=None if after is None else _rfc3339(after),
        )

    # -- uploads -----------------------------------------------------------------------------
    def _upload_parts(self) -> tuple[uploads.Jobs, ids.IdMaker, RenditionStore]:
        """The job tables and this replica's id maker, made on first use (Cassandra may be
        down at start); the maker's shard is unique among live replicas (a Redis counter)."""
        s = self.settings
        session = self.path.session()
        if self._jobs is None or self._renditions is None:
            self._jobs = uploads.Jobs(session, s.cassandra_request_timeout_s)
            self._renditions = RenditionStore(session, self.blobs, s.cassandra_request_timeout_s)
        if self._ids is None:
            shard: Any = self.path.redis.incr(f"feedcast:{s.feast_project}:upload-shard")
            self._ids = ids.IdMaker(int(shard) % ids.SHARDS)
        return self._jobs, self._ids, self._renditions

    def _quota(self, key_id: str) -> None:
        """Count one upload against the key's hourly quota; 429 past it. Redis down: counted
        nowhere, allowed, and the degradation shows in the metrics."""
        s = self.settings
        hour = int(time.time() // 3600)
        key = f"feedcast:{s.feast_project}:upload-quota:{key_id}:{hour}"
        try:
            pipe = self.path.redis.pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, 3600)
            used = int(pipe.execute()[0])
        except Exception as exc:
            log.warning("upload quota not counted: %s", exc)
            self.path.metrics.degraded("upload_quota")
            return
        if used > s.upload_quota_per_hour:
            retry = str(3600 - int(time.time()) % 3600)
            raise HTTPException(
                429,
                f"upload quota of {s.upload_quota_per_hour} per hour used up for this key",
                headers={"Retry-After": retry},
            )

    @api.post(
        "/v1/uploads",
        response_model=UploadAccepted,
        status_code=202,
        responses=_errors(400, 404, 415),
        summary="Upload a photo (multipart/form-data)",
    )
    def upload(
        self,
        request: Request,
        file: Annotated[UploadFile, File(description="The photo: JPEG, PNG or WebP.")],
        author_id: Annotated[int, Form(ge=1, le=I64, description="Who posts it.")],
        topic: Annotated[int, Form(ge=0, le=1023)] = 0,
    ) -> Any:
        """Checked before anything is stored (API key's quota, type sniffed from the bytes,
        size, pixel count from the header); 202 once the original is stored and the job is
        recorded: the renditions follow (GET ``status_url``), then the post reaches the
        followers' feeds. The same author uploading the same bytes again gets that upload."""
        s = self.settings
        self._quota(getattr(request.state, "key_id", "unknown"))
        data = file.file.read(s.upload_max_bytes + 1)
        try:
            probe = images.probe(data, max_bytes=s.upload_max_bytes, max_pixels=s.upload_max_pixels)
        except images.MediaError as exc:
            raise HTTPException(_UPLOAD_ERRORS.get(exc.code, 400), str(exc)) from exc
        try:
            jobs, maker, store = self._upload_parts()
            author = (
                self.path.session()
                .execute(
                    self.path.stmts().get_user, (author_id,), timeout=s.cassandra_request_timeout_s
                )
                .one()
            )
            if author is None:
                raise HTTPException(404, f"unknown author_id {author_id}")
            digest = self.blobs.put(data)  # the content hash: also the duplicate check's key
            post_id, first = jobs.claim_content(author_id, digest, maker.next())
            job = None if first else jobs.get(post_id)
            if job is None:  # new, or a claim whose job was never recorded (a crash between)
                job = jobs.record(post_id, author_id, topic, digest, probe, s.upload_lease_s)
        except HTTPException:
            raise
        except Exception as exc:  # Cassandra or the blob store: nothing accepted
            log.warning("upload not accepted: %s", exc)
            self.path.metrics.degraded("uploads")
            return _unavailable(f"upload not stored, retry: {type(exc).__name__}")
        if job.status == "processing" and job.attempts == 0 and self.uploader is not None:
            try:
                self.uploader.process.remote(post_id)  # its sweeper takes it if this is lost
            except Exception as exc:
                log.warning("upload %d not handed over (the sweeper will): %s", post_id, exc)
                self.path.metrics.degraded("upload_queue")
        body = _upload_status(s, job, store)
        return UploadAccepted(**body, status_url=f"/v1/uploads/{post_id}", duplicate=not first)

    @api.get(
        "/v1/uploads/{post_id}",
        response_model=UploadStatus,
        responses=_errors(404),
        summary="Where an upload stands: processing, ready (with renditions) or failed",
    )
    def upload_status(
        self, post_id: Annotated[int, Path(ge=1, le=I64, description="From the 202.")]
    ) -> Any:
        try:
            jobs, _, store = self._upload_parts()
            job = jobs.get(post_id)
        except Exception as exc:
            log.warning("upload status unreadable: %s", exc)
            return _unavailable(f"upload status unreadable, retry: {type(exc).__name__}")
        if job is None:
            raise HTTPException(404, f"no upload {post_id}")
        return UploadStatus(**_upload_status(self.settings, job, store))


@serve.deployment(ray_actor_options={"num_cpus": 0.25})
class UploadWorker:
    """The upload tier: renders accepted photos (``serving/uploads.py``), nicer than the feed,
    scaled on its own; each worker also sweeps up jobs whose worker died."""

    def __init__(self, settings: dict[str, Any]) -> None:
        json_logging()
        self.s = s = Settings(**settings)
        target = min(19, os.getpriority(os.PRIO_PROCESS, 0) + s.upload_nice)
        startup.set_priority(target)  # every thread now; threads they start inherit it
        if s.upload_sched_idle:
            startup.set_idle()
        self.cluster, session = connect(s)
        redis = cache.client(s)
        timelines = TimelineCache(s, redis, Breaker(1.0))
        stmts, blobs = Statements(session, s), BlobStore(s.blob_store_url)
        self.processor = uploads.Processor(
            s, session, stmts, blobs, timelines_written=timelines.drop
        )
        self.takedowns = takedown.Takedowns(s, session, stmts, blobs)
        self.storage = storage.StorageGauge(s, blobs)
        threading.Thread(target=self._sweep, name="upload-sweeper", daemon=True).start()
        log.info("upload worker ready (nice %d%s)", target, ", SCHED_IDLE" * s.upload_sched_idle)

    def _sweep(self) -> None:
        while True:
            time.sleep(self.s.upload_sweep_s)
            sweeps = (
                ("uploads", self.processor.sweep),
                ("trash", self._trash),
                ("storage", self.storage.update),
            )
            for what, sweep in sweeps:
                try:
                    swept = sweep()
                except Exception:
                    log.exception("%s sweep failed", what)
                    continue
                if any(swept.values()):
                    log.info("%s sweep: %s", what, swept)

    def _trash(self) -> dict[str, int]:
        """Blobs of taken-down posts whose grace period is over (``serving/takedown.py``)."""
        return self.takedowns.sweep_trash()

    async def process(self, post_id: int) -> str:
        """The job just accepted: taken at once (its first try), whatever its lease says."""
        return await asyncio.to_thread(self.processor.run, post_id, first=True)


def build_app(args: AppArgs) -> Application:
    """The feed application: one ingress deployment holding candidates, features and model."""
    s = Settings(**args.settings)
    # serve.deployment turns the class into a Deployment; mypy sees only the class.
    deployment: Any = FeedService
    actor: dict[str, Any] = {"num_cpus": 0.5}
    if s.serve_startup_nice:  # a starting replica yields the CPU to those serving
        # The hook by its environment variable: Ray converts a ``worker_process_setup_hook``
        # field only in ``ray.init``'s job-wide runtime_env, not in an actor's.
        actor["runtime_env"] = {
            "env_vars": {
                WORKER_PROCESS_SETUP_HOOK_ENV_VAR: "serving.startup.lower_priority",
                startup.ENV: str(s.serve_startup_nice),
            }
        }
    return deployment.options(
        ray_actor_options=actor,
        max_ongoing_requests=s.serve_max_ongoing_requests,
        max_queued_requests=s.serve_max_queued_requests,
        # Past the queue the proxy answers 503 with Retry-After at once: overload sheds load
        # instead of queueing it until every request times out.
        backpressure_config={"status_code": 503, "retry_after_s": 1},
        autoscaling_config=autoscaling_config(s),
        user_config={"model_alias": s.model_alias},
        logging_config={"enable_access_log": s.serve_access_log},
    ).bind(args.settings, _upload_worker(s).bind(args.settings))


def _upload_worker(s: Settings) -> Any:
    """The upload tier's deployment: its own replicas and autoscaling, a job at a time each."""
    worker: Any = UploadWorker
    plan = load_upload_plan(s.serve_capacity_plan) if s.serve_capacity_plan else None
    return worker.options(
        max_ongoing_requests=2,
        # The capacity plan's upload workers per hour as the floor (same mechanism as the feed).
        autoscaling_config=upload_autoscaling(s.upload_min_replicas, s.upload_max_replicas, plan),
        logging_config={"enable_access_log": s.serve_access_log},
    )


def autoscaling_config(s: Settings) -> dict[str, Any]:
    """Ray's queue-length policy between the configured bounds, or, with a capacity plan, the
    plan's policy between the lowest and highest of its hourly bounds (it keeps each hour's)."""
    config: dict[str, Any] = {
        "min_replicas": s.serve_min_replicas,
        "max_replicas": s.serve_max_replicas,
        "target_ongoing_requests": s.serve_target_ongoing_requests,
        "upscale_delay_s": 5,
        "downscale_delay_s": 60,
    }
    if s.serve_capacity_plan is not None:
        plan = load_plan(s.serve_capacity_plan)
        config["min_replicas"] = min(plan["min_replicas"])
        config["max_replicas"] = max(plan["max_replicas"])
        config["policy"] = {"policy_function": POLICY, "policy_kwargs": plan}
    return config


def app_builder(args: dict[str, Any]) -> Application:
    """Entry point of ``serve_config.yaml`` (``import_path: serving.app:app_builder``)."""
    return build_app(AppArgs(**args))
