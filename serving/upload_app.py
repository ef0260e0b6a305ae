"""The upload tier: its own Serve application (route prefix ``/v1/uploads``) with two
deployments, so that uploads never take a feed replica's request slots, threads or GIL.

- ``UploadService`` answers ``POST /v1/uploads`` and ``GET /v1/uploads/{id}``: it checks the photo
  (quota, type, size, pixels), stores the original, records the job durably (``serving/uploads.py``)
  and answers 202, then hands the job to a worker.
- ``UploadWorker`` renders it (``media/images.py``), at a lower CPU priority than the feed, scaled
  on its own (a capacity plan's upload workers per hour as its floor); each worker's sweeper takes
  up jobs whose worker died and deletes taken-down blobs after their grace period.

Both run at ``upload_nice`` below the feed. ``build_upload_app`` binds them;
``serving/deploy.py`` runs it beside the feed's application.
"""

# No `from __future__ import annotations`: FastAPI resolves these annotations at runtime, and
# Ray Serve's class ingress cannot resolve string forward references.

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from cassandra.cluster import Cluster, Session
from fastapi import FastAPI, File, Form, HTTPException, Path, Request, UploadFile
from pydantic import BaseModel, Field
from ray import serve
from ray.serve import Application

from core import cache, cpucap, db
from core.breaker import Breaker
from core.db import connect
from core.settings import Settings
from core.statements import Statements
from media import ids, images
from media.blobs import BlobStore
from media.renditions import RenditionStore
from serving import startup, storage, uploads
from serving.autoscaling import load_upload_plan, upload_autoscaling
from serving.candidates import TimelineCache
from serving.http import UPLOADS_PREFIX, AppArgs, Guard, errors, unavailable
from serving.metrics import Metrics, json_logging
from serving.schemas import I64, Rendition

log = logging.getLogger("feedcast.serving.uploads")

# Logical CPUs per replica, what Ray places by (serving/placement.py checks they fit): small,
# since the tier runs at upload_nice and takes only the CPU the feed leaves; a larger share
# would only keep a feed replica, or the tier's own second worker, from being placed.
UPLOAD_API_CPUS = 0.1
UPLOAD_WORKER_CPUS = 0.1

# Its routes are documented in the feed's /openapi.json (serving.http.document), not here.
upload_api = FastAPI(
    title="feedcast uploads", version="1", openapi_url=None, docs_url=None, redoc_url=None
)
upload_api.add_middleware(Guard)


class _AtRoot:
    """Serve mounts an application at its route prefix (``root_path`` = ``/v1/uploads``), and
    Starlette then routes by the rest of the path; these routes carry their whole path, as the
    feed's do (one document, one Guard), so the app is mounted at the root."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            scope["root_path"] = ""
        await self.app(scope, receive, send)


upload_api.add_middleware(_AtRoot)  # added last: the outermost


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


class UploadAccepted(UploadStatus):
    status_url: str = Field(description="GET it for the status (processing, ready, failed).")
    duplicate: bool = Field(description="The same author uploaded the same bytes before: this "
                            "is that upload.")  # fmt: skip


_UPLOAD_ERRORS = {"unsupported_type": 415, "too_large": 413, "too_many_pixels": 413}


_UPLOAD_ERRORS = {"unsupported_type": 415, "too_large": 413, "too_many_pixels": 413}


def upload_status_of(s: Settings, job: uploads.Job, store: RenditionStore) -> dict[str, Any]:
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


@dataclass(frozen=True)
class _Db:
    cluster: Cluster
    session: Session
    stmts: Statements
    jobs: uploads.Jobs
    renditions: RenditionStore


def _lower_priority(s: Settings) -> tuple[int, cpucap.Cap]:
    """The upload tier's processes at ``upload_nice`` below where they started (and under
    SCHED_IDLE with ``upload_sched_idle``): every thread now, and the threads they start; and
    inside the tier's CPU cap (the setup hook joined it already; joining again is a no-op, and
    says where the process stands)."""
    target = min(19, startup.base_priority() + s.upload_nice)
    startup.set_priority(target)
    if s.upload_sched_idle:
        startup.set_idle()
    cap = cpucap.join(cpucap.group_name(s.ray_port), cpucap.cores_for(s.upload_cpu_fraction))
    if not cap.cores and cap.asked:
        log.warning("upload tier not CPU-capped: %s", cap.why)
    return target, cap


@serve.deployment(ray_actor_options={"num_cpus": UPLOAD_API_CPUS})
@serve.ingress(upload_api)
class UploadService:
    """The upload API: checks, stores the original, records the job, answers 202 and hands the
    job to an ``UploadWorker``."""

    def __init__(self, settings: dict[str, Any], worker: Any = None) -> None:
        json_logging()
        self.settings = s = Settings(**settings)
        self.worker = worker  # the UploadWorker deployment's handle
        self.metrics = Metrics()
        self.redis = cache.client(s)
        self.blobs = BlobStore(s.blob_store_url)
        timeout = s.cassandra_request_timeout_s
        self._parts = db.Lazy(
            s, lambda cluster, session: _Db(
                cluster, session, Statements(session, s), uploads.Jobs(session, timeout),
                RenditionStore(session, self.blobs, timeout),
            ),
            Breaker(1.0),
        )  # fmt: skip
        self._ids: ids.IdMaker | None = None
        Guard.arm(s, self.metrics, Breaker(1.0))
        nice, cap = _lower_priority(s)
        log.info("upload service ready (nice %d, %s)", nice, cap)

    def _db(self) -> _Db:
        """Cassandra and the job tables, connected on first use (Cassandra may be down at
        start); while it is unreachable, one try a second and the rest fail at once (503)."""
        return self._parts.get()

    def _id_maker(self) -> ids.IdMaker:
        """This replica's id maker; its shard is unique among live replicas (a Redis counter)."""
        if self._ids is None:
            s = self.settings
            shard: Any = self.redis.incr(f"feedcast:{s.feast_project}:upload-shard")
            self._ids = ids.IdMaker(int(shard) % ids.SHARDS)
        return self._ids

    # -- routes ------------------------------------------------------------------------------
    def _quota(self, key_id: str) -> None:
        """Count one upload against the key's hourly quota; 429 past it. Redis down: counted
        nowhere, allowed, and the degradation shows in the metrics."""
        s = self.settings
        hour = int(time.time() // 3600)
        key = f"feedcast:{s.feast_project}:upload-quota:{key_id}:{hour}"
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, 3600)
            used = int(pipe.execute()[0])
        except Exception as exc:
            log.warning("upload quota not counted: %s", exc)
            self.metrics.degraded("upload_quota")
            return
        if used > s.upload_quota_per_hour:
            retry = str(3600 - int(time.time()) % 3600)
            raise HTTPException(
                429,
                f"upload quota of {s.upload_quota_per_hour} per hour used up for this key",
                headers={"Retry-After": retry},
            )

    @upload_api.post(
        UPLOADS_PREFIX,
        response_model=UploadAccepted,
        status_code=202,
        responses=errors(400, 404, 415),
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
            db = self._db()
            jobs, maker, store = db.jobs, self._id_maker(), db.renditions
            author = db.session.execute(
                db.stmts.get_user, (author_id,), timeout=s.cassandra_request_timeout_s
            ).one()
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
            self.metrics.degraded("uploads")
            return unavailable(f"upload not stored, retry: {type(exc).__name__}")
        if job.status == "processing" and job.attempts == 0 and self.worker is not None:
            try:
                self.worker.process.remote(post_id)  # its sweeper takes it if this is lost
            except Exception as exc:
                log.warning("upload %d not handed over (the sweeper will): %s", post_id, exc)
                self.metrics.degraded("upload_queue")
        body = upload_status_of(s, job, store)
        return UploadAccepted(**body, status_url=f"{UPLOADS_PREFIX}/{post_id}", duplicate=not first)

    @upload_api.get(
        UPLOADS_PREFIX + "/{post_id}",
        response_model=UploadStatus,
        responses=errors(404),
        summary="Where an upload stands: processing, ready (with renditions) or failed",
    )
    def upload_status(
        self, post_id: Annotated[int, Path(ge=1, le=I64, description="From the 202.")]
    ) -> Any:
        try:
            db = self._db()
            job, store = db.jobs.get(post_id), db.renditions
        except Exception as exc:
            log.warning("upload status unreadable: %s", exc)
            return unavailable(f"upload status unreadable, retry: {type(exc).__name__}")
        if job is None:
            raise HTTPException(404, f"no upload {post_id}")
        return UploadStatus(**upload_status_of(self.settings, job, store))


@serve.deployment(ray_actor_options={"num_cpus": UPLOAD_WORKER_CPUS})
class UploadWorker:
    """The upload tier: renders accepted photos (``serving/uploads.py``), nicer than the feed,
    scaled on its own; each worker also sweeps up jobs whose worker died."""

    def __init__(self, settings: dict[str, Any]) -> None:
        json_logging()
        self.s = s = Settings(**settings)
        target, self.cap = _lower_priority(s)
        self.cluster, session = connect(s)
        redis = cache.client(s)
        timelines = TimelineCache(s, redis, Breaker(1.0))
        stmts, blobs = Statements(session, s), BlobStore(s.blob_store_url)
        # Renders in a scheduling group of its own: nice threads here would still spend the
        # share of the Ray session the feed's replicas are in (serving/startup.own_session).
        self.renderer = uploads.RenderProcess(s.upload_nice, s.upload_sched_idle)
        self.processor = uploads.Processor(
            s, session, stmts, blobs, timelines_written=timelines.add,
            render_in=self.renderer.render,
        )  # fmt: skip
        self.takedowns = self.processor.takedowns
        self.storage = storage.StorageGauge(s, blobs)
        self.cap_gauges = cpucap.CapGauges(self.cap)
        threading.Thread(target=self._sweep, name="upload-sweeper", daemon=True).start()
        threading.Thread(target=self._start_renderer, name="renderer-start", daemon=True).start()
        log.info(
            "upload worker ready (nice %d%s, %s)",
            target, ", SCHED_IDLE" * s.upload_sched_idle, self.cap,
        )  # fmt: skip

    def _start_renderer(self) -> None:
        """Start the render process now, not on the first job (a fresh Python's imports)."""
        try:
            log.info("render process in %s", self.renderer.group())
        except Exception:
            log.exception("render process did not start (the first job will retry)")

    def _sweep(self) -> None:
        while True:
            time.sleep(self.s.upload_sweep_s)
            sweeps = (
                ("uploads", self.processor.sweep),
                ("trash", self._trash),
                ("storage", self.storage.update),
                ("cpu cap", self.cap_gauges.update),
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


def _actor_options(s: Settings, cpus: float) -> dict[str, Any]:
    """An upload replica at ``upload_nice`` from its first instruction (Ray's setup hook), not
    only from its ``__init__``: otherwise its start (a fresh Python importing Ray, Pillow and
    the Cassandra driver) runs at the feed's priority every time the tier scales up under a
    burst, and the burst's worst 30 s were those (docs/RELIABILITY.md)."""
    return startup.actor_options(
        cpus,
        "serving.startup.stay_lower",
        s.upload_nice,
        cpucap.env(s.ray_port, s.upload_cpu_fraction),
    )


def upload_worker(s: Settings) -> Any:
    """The upload tier's deployment: its own replicas and autoscaling, a job at a time each."""
    worker: Any = UploadWorker
    plan = load_upload_plan(s.serve_capacity_plan) if s.serve_capacity_plan else None
    return worker.options(
        ray_actor_options=_actor_options(s, UPLOAD_WORKER_CPUS),
        max_ongoing_requests=2,
        # The capacity plan's upload workers per hour as the floor (same mechanism as the feed).
        autoscaling_config=upload_autoscaling(s.upload_min_replicas, s.upload_workers_max, plan),
        logging_config={"enable_access_log": s.serve_access_log},
    )


def build_upload_app(args: AppArgs) -> Application:
    """The upload tier's application (route prefix ``/v1/uploads``): the API and its workers."""
    s = Settings(**args.settings)
    service: Any = UploadService  # serve.deployment made it a Deployment; mypy sees the class
    return service.options(
        ray_actor_options=_actor_options(s, UPLOAD_API_CPUS),
        # As many uploads in flight as the gate admits, twice over; past them, 503 at once.
        max_ongoing_requests=2 * s.upload_max_inflight,
        max_queued_requests=2 * s.upload_max_inflight,
        backpressure_config={"status_code": 503, "retry_after_s": 1},
        logging_config={"enable_access_log": s.serve_access_log},
    ).bind(args.settings, upload_worker(s).bind(args.settings))


def app_builder(args: dict[str, Any]) -> Application:
    """Entry point of ``serve_config.yaml``'s upload application."""
    return build_upload_app(AppArgs(**args))
