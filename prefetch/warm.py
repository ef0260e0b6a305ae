"""Cache warmers: put what a user will probably want next where it is cheap to fetch.

- ``EdgeWarmer`` requests media objects through the CDN edge, so that the edge stores them
  before the app asks; warming is nothing more than a GET whose body is thrown away.

(The later feed pages are not copied anywhere: they are the user's ranked session,
``serving.sessions``, which the serving hook plans the next page's media from.)

It runs off any request's hot path and are best effort: a failure (edge down, Redis down, a
timeout) is counted in the result they return and logged, never raised, because a request that
was not warmed is merely slower, while a warmer that raised could fail the work that called it.
"""

from __future__ import annotations

import http.client
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from core.settings import Settings

log = logging.getLogger(__name__)

# X-Cache-Status values: after these the edge holds the object it did not hold before ...
STORED = frozenset({"MISS", "EXPIRED"})
# ... and after these it held it already (STALE/UPDATING: an older copy, still served).
ALREADY = frozenset({"HIT", "STALE", "UPDATING", "REVALIDATED"})
_READ_BYTES = 64 * 1024
REFRESH_PREFIX = "/refresh/"  # media.objects.refresh_path: look up, never fetch
_HTTP_ERRORS = (http.client.HTTPException, TimeoutError, OSError, ValueError)
REPORT_EVERY_S = 1.0  # background outcomes reach the observer at most this often (batched)
# A kept-alive connection idle this long is closed, not reused: the edge closes its idle ones
# after 30 s (keepalive_timeout), and a request written into a connection it closed is lost.
IDLE_REUSE_S = 15.0
# What a request on a connection the server closed meanwhile fails with (before any answer).
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


@dataclass
class EdgeResult:
    """What one ``warm`` call (or the background queue, so far) did at the edge."""

    requested: int = 0
    warmed: int = 0  # the edge fetched it from the origin and stored it (MISS, EXPIRED)
    already: int = 0  # the edge had it (HIT)
    failed: int = 0  # not stored: error status, no cache status, edge down, timeout
    refreshed: int = 0  # a refresh (HEAD /refresh/...) found it cached and marked it used
    absent: int = 0  # a refresh found it not cached (and fetched nothing, by design)
    bytes: int = 0  # body bytes read from the edge

    def count(self, outcome: str, nbytes: int) -> None:
        self.requested += 1
        setattr(self, outcome, getattr(self, outcome) + 1)
        self.bytes += nbytes


@dataclass(frozen=True)
class QueueStats:
    """The background queue of an ``EdgeWarmer``: what it did and what it could not take."""

    done: EdgeResult
    dropped: int  # paths refused because the queue was full (or the warmer closed)
    pending: int  # paths waiting now


class EdgeWarmer:
    """Warms media objects at the edge by GET, at most ``prefetch_concurrency`` at a time.

    ``warm(paths)`` waits for its paths and says what happened to them (jobs, tests);
    ``submit(paths)`` never blocks: paths go to a bounded queue that background threads work
    through, and are dropped, counted, when it is full (the serving path).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        base_url: str | None = None,
        observe: Callable[[str, int], None] | None = None,
    ) -> None:
        """``observe(outcome, n)`` hears of every background path as it ends (``warmed``,
        ``already``, ``failed``) or is dropped (``dropped``): a replica's metrics, say."""
        self._observe = observe
        local = f"http://127.0.0.1:{settings.edge_port}"
        self.base_url = (base_url or settings.edge_url or local).rstrip("/")
        self.timeout_s = settings.prefetch_timeout_s
        self.concurrency = settings.prefetch_concurrency
        # Plain http.client on kept-alive connections, one per slot in use: a warm request is
        # a GET whose body is dropped, and httpx's machinery cost ~5x its CPU (a replica warms
        # after every page it serves).
        url = urlsplit(self.base_url)
        if url.scheme != "http" or not url.hostname:
            raise ValueError(f"the edge is warmed over plain http: {self.base_url!r}")
        self._host, self._port, self._prefix = url.hostname, url.port or 80, url.path
        self._idle: list[tuple[http.client.HTTPConnection, float]] = []  # (conn, idle since)
        self._pending: Counter[str] = Counter()  # background outcomes not yet reported
        self._reported_at = time.monotonic()
        # One bound for warm() and the background threads together: the edge (and through it
        # the origin) never sees more than `concurrency` warm requests from this warmer.
        self._slots = threading.BoundedSemaphore(self.concurrency)
        self._queue: queue.Queue[str | None] = queue.Queue(maxsize=settings.prefetch_queue_size)
        self._lock = threading.Lock()
        self._done = EdgeResult()
        self._dropped = 0
        self._workers: list[threading.Thread] = []
        self._closed = False

    def warm(self, paths: Iterable[str]) -> EdgeResult:
        """Request each path through the edge; returns once every one succeeded or failed."""
        todo = list(paths)
        result = EdgeResult()
        if not todo:
            return result
        workers = min(self.concurrency, len(todo))
        with ThreadPoolExecutor(workers, thread_name_prefix="edge-warm") as pool:
            for outcome, nbytes in pool.map(self._fetch, todo):
                result.count(outcome, nbytes)
        if result.failed:
            log.warning("edge warm: %d of %d paths failed", result.failed, result.requested)
        return result

    def submit(self, paths: Iterable[str]) -> int:
        """Queue paths for the background threads without waiting; returns how many were
        queued (the rest were dropped and show in ``stats().dropped``)."""
        queued = dropped = 0
        with self._lock:
            if not self._closed and not self._workers:
                self._start_workers()
        for path in paths:
            if self._closed:
                dropped += 1
                continue
            try:
                self._queue.put_nowait(path)
                queued += 1
            except queue.Full:
                dropped += 1
        if dropped:
            with self._lock:
                self._dropped += dropped
            self._tell("dropped", dropped)
        return queued

    def drain(self, timeout_s: float) -> bool:
        """Wait until every queued path has been tried; False if ``timeout_s`` ran out first."""
        deadline = time.monotonic() + timeout_s
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._queue.all_tasks_done.wait(left)
        return True

    def stats(self) -> QueueStats:
        with self._lock:
            return QueueStats(replace(self._done), self._dropped, self._queue.qsize())

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the background threads: queued paths are dropped, one in flight finishes."""
        with self._lock:
            self._closed = True
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
            self._queue.task_done()
            with self._lock:
                self._dropped += 1
        for _ in self._workers:
            self._queue.put(None)
        deadline = time.monotonic() + timeout_s
        for t in self._workers:
            t.join(max(0.0, deadline - time.monotonic()))
        self._report(force=True)
        with self._lock:
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            conn.close()

    def __enter__(self) -> EdgeWarmer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _start_workers(self) -> None:
        for i in range(self.concurrency):
            t = threading.Thread(target=self._work, name=f"edge-warm-bg-{i}", daemon=True)
            t.start()
            self._workers.append(t)

    def _work(self) -> None:
        while True:
            path = self._queue.get()
            try:
                if path is None:
                    return
                outcome, nbytes = self._fetch(path)
                with self._lock:
                    self._done.count(outcome, nbytes)
                    self._pending[outcome] += 1
                self._report(force=self._queue.qsize() == 0)
            finally:
                self._queue.task_done()

    def _tell(self, outcome: str, n: int) -> None:
        with self._lock:
            self._pending[outcome] += n
        self._report()

    def _report(self, force: bool = False) -> None:
        """Hand the observer what ended since the last report: at most once a second (or
        when the queue runs dry), one call per outcome, not one per path."""
        if self._observe is None:
            return
        with self._lock:
            if not self._pending or (
                not force and time.monotonic() - self._reported_at < REPORT_EVERY_S
            ):
                return
            pending, self._pending = self._pending, Counter()
            self._reported_at = time.monotonic()
        for outcome, n in pending.items():
            try:
                self._observe(outcome, n)
            except Exception:  # an observer's bug must not kill a warm thread
                log.exception("edge warm observer failed")

    def _request(self, method: str, path: str) -> tuple[int, str, int]:
        """One request on a kept-alive connection: (status, X-Cache-Status, body bytes read),
        the body read and dropped within ``timeout_s``; a connection that failed is closed.

        A reused connection the edge closed meanwhile (its keep-alive ran out, or it restarted)
        fails before any answer: the request is sent once more on a new connection. GET and
        HEAD are safe to repeat, and without this the first warms after a quiet spell failed.
        """
        conn = self._take()
        if conn is not None:
            try:
                return self._exchange(conn, method, path)
            except _STALE as exc:
                log.debug("edge warm %s: kept-alive connection gone (%r), reconnecting", path, exc)
        conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout_s)
        return self._exchange(conn, method, path)

    def _take(self) -> http.client.HTTPConnection | None:
        """The most recently used idle connection if it is fresh enough to reuse; else None,
        and every idle one is closed (they are appended in time order: the last is the newest,
        so when it is too old, all are)."""
        stale: list[tuple[http.client.HTTPConnection, float]] = []
        with self._lock:
            if not self._idle:
                return None
            if time.monotonic() - self._idle[-1][1] < IDLE_REUSE_S:
                return self._idle.pop()[0]
            stale, self._idle = self._idle, []
        for conn, _ in stale:
            conn.close()
        return None

    def _exchange(
        self, conn: http.client.HTTPConnection, method: str, path: str
    ) -> tuple[int, str, int]:
        deadline = time.monotonic() + self.timeout_s
        try:
            conn.request(method, self._prefix + path, headers={"User-Agent": "feedcast-warmer"})
            r = conn.getresponse()
            got = 0
            while chunk := r.read(_READ_BYTES):
                got += len(chunk)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"body not read within {self.timeout_s} s")
            status = (r.getheader("x-cache-status") or "").upper()
        except BaseException:
            conn.close()
            raise
        if r.will_close:
            conn.close()
        else:
            with self._lock:
                self._idle.append((conn, time.monotonic()))
        return r.status, status, got

    def _fetch(self, path: str) -> tuple[str, int]:
        """GET one path through the edge, reading and discarding its body within the timeout
        (a refresh path is a HEAD: it never fetches).

        Returns the outcome (``warmed``, ``already``, ``refreshed``, ``absent`` or ``failed``)
        and the bytes read.
        """
        if path.startswith(REFRESH_PREFIX):
            return self._refresh(path), 0
        with self._slots:
            try:
                code, status, got = self._request("GET", path)
            except _HTTP_ERRORS as exc:
                log.debug("edge warm %s: %r", path, exc)
                return "failed", 0
        if code != 200:
            log.debug("edge warm %s: HTTP %d", path, code)
            return "failed", got
        if status in STORED:
            return "warmed", got
        if status in ALREADY:
            return "already", got
        log.debug("edge warm %s: not cached (X-Cache-Status %r)", path, status)
        return "failed", got

    def _refresh(self, path: str) -> str:
        """HEAD a refresh path: HIT marks the cached object used; a miss is ``absent``."""
        with self._slots:
            try:
                code, status, _ = self._request("HEAD", path)
            except _HTTP_ERRORS as exc:
                log.debug("edge refresh %s: %r", path, exc)
                return "failed"
        if code == 200 and status in ALREADY:
            return "refreshed"
        if code in (200, 204) and status in STORED:
            return "absent"
        log.debug("edge refresh %s: HTTP %d, X-Cache-Status %r", path, code, status)
        return "failed"
