"""The upload tier's jobs: accepted durably, processed at least once, never lost.

``POST /v1/uploads`` (``serving/app.py``) checks the photo (``media.images.probe``), stores the
original in the blob store, claims ``(author, content hash)`` and records the job in Cassandra
before it answers 202: from then on the job is in ``uploads`` (status ``processing``) and in
``uploads_pending``. A worker of the upload deployment takes it with a **lease** (a
compare-and-set on ``lease_ms``, so two workers never process one job at once), renders it,
stores the renditions (blobs, then the post's rows), announces the post and fans it out to the
followers, and only then marks it ``ready`` and removes it from ``uploads_pending``. A worker
that dies mid-job leaves the lease to run out; the sweeper of any worker takes the job again.
Every step is idempotent (content-addressed blobs, upserted rows, the post claimed by id), so a
job done twice is one post with one set of renditions. A photo that does not decode ends
``failed`` with its reason; a job that fails ``max_attempts`` times for other reasons too.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from typing import Any

from cassandra.cluster import Session

from core.settings import Settings
from core.statements import Statements
from media import images
from media.blobs import BlobStore
from media.images import MediaError
from media.renditions import RenditionStore, Stored
from serving import ingest, startup, takedown

log = logging.getLogger("feedcast.serving.uploads")

PENDING_BUCKETS = 8  # uploads_pending partitions the sweeper reads (pending_bucket)


def pending_bucket(post_id: int) -> int:
    """The ``uploads_pending`` partition of a job: the top 3 bits of the id times 2^64 / phi
    (Fibonacci hashing), so that any bits of the id spread the jobs. Not ``post_id % 8``: an
    upload id's low bits are its sequence within a millisecond, 0 whenever a maker makes fewer
    than one id a millisecond, so every job and every deletion's tombstone went to bucket 0
    (the chaos node warned of 3,400-4,100 tombstones per sweep read of it, every 10 s)."""
    return ((post_id * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF) >> 61


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class Job:
    post_id: int
    author_id: int
    topic: int
    original: str  # the original's digest in the blob store
    status: str
    reason: str | None
    placeholder: str | None
    attempts: int
    lease_ms: int
    created_ms: int


class Jobs:
    """The job tables (``core/schema/007_media.cql``)."""

    def __init__(self, session: Session, timeout_s: float) -> None:
        self.session, self.timeout_s = session, timeout_s
        p = session.prepare
        self._claim_content = p(
            "INSERT INTO uploads_by_content (author_id, sha256, post_id) VALUES (?, ?, ?) "
            "IF NOT EXISTS"
        )
        self._insert = p(
            "INSERT INTO uploads (post_id, author_id, topic, original, original_bytes, kind, "
            "width, height, status, attempts, created_ms, updated_ms, lease_ms) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'processing', 0, ?, ?, ?)"
        )
        self._pending = p("INSERT INTO uploads_pending (bucket, post_id) VALUES (?, ?)")
        self._ref = p("INSERT INTO blob_refs (sha256, post_id) VALUES (?, ?)")
        self._get = p(
            "SELECT post_id, author_id, topic, original, status, reason, placeholder, attempts, "
            "lease_ms, created_ms FROM uploads WHERE post_id = ?"
        )
        self._lease = p(
            "UPDATE uploads SET lease_ms = ?, attempts = ?, updated_ms = ? WHERE post_id = ? "
            "IF lease_ms = ? AND status = 'processing'"
        )
        self._finish = p(  # a takedown's 'removed' is never overwritten
            "UPDATE uploads SET status = ?, reason = ?, placeholder = ?, updated_ms = ? "
            "WHERE post_id = ? IF status = 'processing'"
        )
        self._done = p("DELETE FROM uploads_pending WHERE bucket = ? AND post_id = ?")
        self._scan = p("SELECT post_id FROM uploads_pending WHERE bucket = ?")

    def _run(self, stmt: Any, args: tuple[Any, ...]) -> Any:
        return self.session.execute(stmt, args, timeout=self.timeout_s)

    def claim_content(self, author_id: int, sha256: str, post_id: int) -> tuple[int, bool]:
        """The post id of this author's upload of these bytes: ``post_id`` and True when it is
        the first, the earlier upload's id and False when it is a re-upload."""
        rs = self._run(self._claim_content, (author_id, sha256, post_id))
        if rs.was_applied:
            return post_id, True
        return int(rs.one().post_id), False

    def record(
        self, post_id: int, author_id: int, topic: int, original: str, probe: images.Probe,
        lease_s: float,
    ) -> Job:  # fmt: skip
        """The accepted job, leased to the worker it is handed to (``lease_s``)."""
        t = now_ms()
        lease = t + int(lease_s * 1000)
        self._run(self._ref, (original, post_id))  # the original's reference before the job
        self._run(
            self._insert,
            (post_id, author_id, topic, original, probe.bytes, probe.kind, probe.width,
             probe.height, t, t, lease),
        )  # fmt: skip
        self._run(self._pending, (pending_bucket(post_id), post_id))
        return Job(post_id, author_id, topic, original, "processing", None, None, 0, lease, t)

    def get(self, post_id: int) -> Job | None:
        row = self._run(self._get, (post_id,)).one()
        if row is None or row.status is None:
            return None
        return Job(
            int(row.post_id), int(row.author_id), int(row.topic), row.original, row.status,
            row.reason, row.placeholder, int(row.attempts or 0), int(row.lease_ms or 0),
            int(row.created_ms or 0),
        )  # fmt: skip

    def lease(self, job: Job, lease_s: float) -> Job | None:
        """Take ``job`` for ``lease_s`` if nobody took it since it was read; None otherwise."""
        t = now_ms()
        until = t + int(lease_s * 1000)
        rs = self._run(self._lease, (until, job.attempts + 1, t, job.post_id, job.lease_ms))
        if not rs.was_applied:
            return None
        return replace(job, attempts=job.attempts + 1, lease_ms=until)

    def finish(
        self, post_id: int, status: str, reason: str | None, placeholder: str | None
    ) -> bool:
        """End the job as ``status``; False when it was no longer processing (taken down)."""
        rs = self._run(self._finish, (status, reason, placeholder, now_ms(), post_id))
        applied = bool(rs.was_applied)
        self.done(post_id)
        return applied

    def done(self, post_id: int, bucket: int | None = None) -> None:
        """Off the sweeper's list (from ``bucket`` where the sweeper found it: a row written
        before :func:`pending_bucket` may sit in another)."""
        self._run(self._done, (pending_bucket(post_id) if bucket is None else bucket, post_id))

    def pending_rows(self) -> list[tuple[int, int]]:
        """Every ``(bucket, post_id)`` on the sweeper's list."""
        out: list[tuple[int, int]] = []
        for bucket in range(PENDING_BUCKETS):
            out += [(bucket, int(r.post_id)) for r in self._run(self._scan, (bucket,))]
        return out

    def pending(self) -> list[int]:
        return [post_id for _, post_id in self.pending_rows()]


RENDER_NAME = "feedcast-render"  # the render process's name (ps, top, /proc/PID/comm)
Rendered = tuple[list[images.Rendition], str]  # the renditions and the placeholder


def render(engine: str, data: bytes, floor: float) -> Rendered:
    """``images.render`` by engine name (picklable: what a render process is handed)."""
    return images.render(images.engine(engine), data, floor=floor)


class RenderProcess:
    """Renders in a process of its own that is a scheduling group of its own at ``nice``
    (``startup.own_session``): a busy upload tier then takes only CPU the feed leaves, where
    the worker's own threads, in the Ray session the feed's replicas share, could not. One
    render at a time; a process that dies (OOM, a signal) is replaced on the next job, and the
    job it held is retried by the sweeper like any other failure."""

    def __init__(self, nice: int, idle: bool = False) -> None:
        self._args = (nice, idle, RENDER_NAME)
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    1,
                    # Not fork: a Ray worker has many threads, and a fork copies their locks.
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=startup.own_group_of,
                    initargs=(os.getpid(), *self._args),
                )
            return self._pool

    def render(self, engine: str, data: bytes, floor: float) -> Rendered:
        pool = self._executor()
        try:
            return pool.submit(render, engine, data, floor).result()
        except BrokenProcessPool:
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)
            raise

    def group(self) -> str:
        """The render process's autogroup line (``/autogroup-N nice M``), for checks."""
        return self._executor().submit(startup.autogroup).result()

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


class Processor:
    """What a worker of the upload deployment does with a job."""

    def __init__(
        self,
        settings: Settings,
        session: Session,
        stmts: Statements,
        blobs: BlobStore,
        *,
        timelines_written: ingest.Written | None = None,
        render_in: Callable[[str, bytes, float], Rendered] | None = None,
    ) -> None:
        self.s, self.session, self.stmts, self.blobs = settings, session, stmts, blobs
        timeout = settings.cassandra_request_timeout_s
        self.jobs = Jobs(session, timeout)
        self.renditions = RenditionStore(session, blobs, timeout)
        self.engine = images.engine(settings.media_engine)
        self.takedowns = takedown.Takedowns(settings, session, stmts, blobs)
        self.timelines_written = timelines_written
        self.render_in = render_in or render  # e.g. RenderProcess.render; default: here

    def run(self, post_id: int, *, first: bool = False) -> str:
        """Process the job if it is due: its lease ran out, or (``first``) nobody has tried it
        yet (the worker it was handed to); returns its status afterwards (``processing`` when
        another worker holds it)."""
        job = self.jobs.get(post_id)
        if job is None:
            return "unknown"
        if job.status != "processing":
            return job.status
        if not (first and job.attempts == 0) and job.lease_ms > now_ms():
            return job.status
        if job.attempts >= self.s.upload_max_attempts:
            self.jobs.finish(post_id, "failed", f"gave up after {job.attempts} attempts", None)
            return "failed"
        taken = self.jobs.lease(job, self.s.upload_lease_s)
        if taken is None:
            return "processing"
        return self._process(taken)

    def _process(self, job: Job) -> str:
        try:
            original = self.blobs.get(job.original)
            rendered, placeholder = self.render_in(
                self.s.media_engine, original, self.s.media_ssim_floor
            )
        except FileNotFoundError:  # the original trashed: taken down before it was read
            if self._taken_down(job.post_id):
                return self._withdraw(job)
            raise
        except MediaError as exc:  # the photo itself: no retry will change it
            if not self.jobs.finish(job.post_id, "failed", f"{exc.code}: {exc.detail}", None):
                return self._withdraw(job)
            log.info("upload %d failed: %s", job.post_id, exc)
            return "failed"
        stored = self.renditions.put(job.post_id, rendered)
        if self._taken_down(job.post_id):  # while it rendered: announce nothing
            return self._withdraw(job)
        self._announce(job, stored)
        if not self.jobs.finish(job.post_id, "ready", None, placeholder):
            return self._withdraw(job)  # while it was announced: the feeds leave it out already
        log.info("upload %d ready: %d renditions", job.post_id, len(stored))
        return "ready"

    def _taken_down(self, post_id: int) -> bool:
        job = self.jobs.get(post_id)
        return job is not None and job.status == "removed"

    def _withdraw(self, job: Job) -> str:
        """A job taken down while it was processed: what this worker stored is taken down too
        (the takedown found no renditions yet), and the job leaves the sweeper's list."""
        removal = self.takedowns.remove_media(job.post_id, job.original)
        self.jobs.done(job.post_id)
        log.info("upload %d taken down while processing: %s", job.post_id, removal)
        return "removed"

    def _announce(self, job: Job, stored: list[Stored]) -> None:
        """The post into the posts tables and the followers' timelines, now that its
        renditions are stored (a post is never fanned out before it can be shown)."""
        widest = max((s for s in stored if s.format == "jpeg"), key=lambda s: s.width)
        post = ingest.PostIn.model_construct(  # a server-assigned id: above the announced range
            post_id=job.post_id,
            author_id=job.author_id,
            topic=job.topic,
            media_kind="photo",
            media_bytes=widest.bytes,
            created_at=None,
        )
        s = self.s
        claimed = ingest.claim_post(
            self.session, self.stmts, post,
            pull_threshold=s.pull_follower_threshold, timeout_s=s.cassandra_request_timeout_s,
        )  # fmt: skip
        ingest.fan_out(
            self.session, self.stmts, claimed, days=s.timeline_days,
            written=self.timelines_written,
        )  # fmt: skip

    def sweep(self) -> dict[str, int]:
        """Every pending job whose lease ran out, processed here; counts by outcome."""
        out: dict[str, int] = {}
        for bucket, post_id in self.jobs.pending_rows():
            try:
                status = self.run(post_id)
                # Off the list once it is over: taken down before any worker held it, or
                # finished where the list's row outlived the job (its removal failed, or it
                # was written where an older build put it). An unknown job may be one not yet
                # readable: it stays.
                if status in ("removed", "ready", "failed"):
                    self.jobs.done(post_id, bucket)
            except Exception:
                log.exception("sweeping upload %d", post_id)
                status = "error"
            out[status] = out.get(status, 0) + 1
        return out
