"""The feed's Ray Serve application: the FastAPI ingress deployment (``FeedService``) that
answers every route but the uploads', which are the upload tier's application
(``serving/upload_app.py``, route prefix ``/v1/uploads``, its own replicas).

``build_app(AppArgs(...))`` binds it; ``feedcast serve`` runs both applications, and
``serving/serve_config.yaml`` describes the same two for ``serve run`` / ``serve deploy``.

Every replica is stateless apart from caches it can lose: rate limits and pages live in Redis,
everything else in Cassandra, so replicas can run on many nodes.
"""

# No `from __future__ import annotations`: FastAPI resolves these annotations at runtime, and
# Ray Serve's class ingress cannot resolve string forward references.

import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Path, Query, Response
from pydantic import BaseModel, Field
from ray import serve
from ray.serve import Application

from core.lease import lease_key
from core.settings import Settings
from media.blobs import BlobStore
from serving import ingest, startup, takedown
from serving.autoscaling import LEASED_POLICY, POLICY, load_plan
from serving.cursor import MAX_CURSOR_CHARS, CursorError
from serving.feed import FeedPath
from serving.http import AppArgs, Guard, document, errors, unavailable
from serving.metrics import json_logging, request_context
from serving.schemas import I64, FeedPage
from serving.upload_app import upload_api
from serving.warming import Seen

log = logging.getLogger("feedcast.serving")

api = FastAPI(
    title="feedcast",
    description="Ranked feed pages from engagement models served on Ray Serve. Every /v1 route "
    "needs an API key in the X-API-Key header.",
    version="1",
)


api.add_middleware(Guard)


def _openapi() -> dict[str, Any]:
    """The service's whole document: the feed's routes and the upload tier's (its own app)."""
    if api.openapi_schema is None:
        api.openapi_schema = document(api, upload_api)
    return api.openapi_schema


api.openapi = _openapi  # type: ignore[method-assign]
_NO_SCORE = {"items": {"__all__": {"score"}}}  # the score is shown with debug=true only


class Pong(BaseModel):
    status: Literal["ok"] = "ok"


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


def _rfc3339(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat().replace("+00:00", "Z")


# Logical CPUs per feed replica: what Ray places by (serving/placement.py checks they fit).
FEED_CPUS = 0.5


@serve.deployment(ray_actor_options={"num_cpus": FEED_CPUS})
@serve.ingress(api)
class FeedService:
    def __init__(self, settings: dict[str, Any]) -> None:
        json_logging()  # one JSON object per line, with the request id inside a request
        self.settings = s = Settings(**settings)
        self.path = FeedPath(s)
        self.blobs = BlobStore(s.blob_store_url)
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

    @api.get("/v1/ping", response_model=Pong, responses=errors())
    def ping(self) -> Pong:
        """Checks the API key and its rate limit, and does nothing else: what a client calls to
        test its key, and the benchmark's floor for a /v1 request."""
        return Pong()

    @api.get(
        "/v1/feed/{user_id}",
        response_model=FeedPage,
        responses=errors(400, 404),
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

    @api.post("/v1/events", response_model=ingest.EventResult, responses=errors(400))
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
            return unavailable(f"events not stored, retry: {type(exc).__name__}")
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
        responses=errors(400, 404, 409),
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
            return unavailable(f"post not stored, retry: {type(exc).__name__}")
        if not claimed.pull:
            self.background.submit(
                ingest.fan_out,
                session,
                stmts,
                claimed,
                days=s.timeline_days,
                written=self.path.timelines.add,
            )
        return ingest.PostResult(
            post_id=body.post_id,
            status="created" if claimed.created else "duplicate",
            fanout="pull" if claimed.pull else "queued",
        )

    @api.delete(
        "/v1/posts/{post_id}",
        response_model=Removed,
        responses=errors(403, 404),
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
                    self.settings,
                    self.path.session(),
                    self.path.stmts(),
                    self.blobs,
                    on_removed=self.path.removed.add,  # off this replica's pages, others told
                )
            done = self._takedowns.remove(post_id, author_id)
        except takedown.NotAuthor as exc:
            raise HTTPException(403, str(exc)) from exc
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from exc
        except Exception as exc:  # nothing half-done that a retry would not finish
            log.warning("takedown of %d not done: %s", post_id, exc)
            self.path.metrics.degraded("takedown")
            return unavailable(f"takedown not done, retry: {type(exc).__name__}")
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


def build_app(args: AppArgs) -> Application:
    """The feed application: one ingress deployment holding candidates, features and models."""
    s = Settings(**args.settings)
    # serve.deployment turns the class into a Deployment; mypy sees only the class.
    deployment: Any = FeedService
    # A starting replica yields the CPU to those serving (serving/startup.py).
    actor = startup.actor_options(FEED_CPUS, "serving.startup.lower_priority", s.serve_startup_nice)
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
    ).bind(args.settings)


def autoscaling_config(s: Settings) -> dict[str, Any]:
    """Ray's queue-length policy between the configured bounds, or, with a capacity plan, the
    plan's policy between the lowest and highest of its hourly bounds (it keeps each hour's);
    either with the responder's floor lease on top (serving/autoscaling.py)."""
    config: dict[str, Any] = {
        "min_replicas": s.serve_min_replicas,
        "max_replicas": s.serve_max_replicas,
        "target_ongoing_requests": s.serve_target_ongoing_requests,
        "upscale_delay_s": 5,
        "downscale_delay_s": 60,
    }
    lease = {"host": s.redis_host, "port": s.redis_port, "db": s.redis_db, "key": lease_key(s)}
    if s.serve_capacity_plan is not None:
        plan = load_plan(s.serve_capacity_plan)
        config["min_replicas"] = min(plan["min_replicas"])
        config["max_replicas"] = max(plan["max_replicas"])
        config["policy"] = {"policy_function": POLICY, "policy_kwargs": {**plan, "lease": lease}}
    else:
        config["policy"] = {"policy_function": LEASED_POLICY, "policy_kwargs": {"lease": lease}}
    return config


def app_builder(args: dict[str, Any]) -> Application:
    """Entry point of ``serve_config.yaml`` (``import_path: serving.app:app_builder``)."""
    return build_app(AppArgs(**args))
