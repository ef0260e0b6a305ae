"""Takedowns: a post its author removes leaves every feed, the edge and, after a grace period, the
blob store (schema v8, ``core/schema/008_takedown.cql``).

``DELETE /v1/posts/{id}`` (:meth:`Takedowns.remove`) records the post in ``posts_removed``
first: from then on every feed replica leaves it off every page within ``takedown_refresh_s``
(:class:`RemovedPosts`, a per-replica copy of that small table re-read off the request path),
whichever source it came from and whether the page is a first page or a stored session's. Then
its media: each blob the post used (the original and the renditions) loses the post's reference,
and a blob no other post refers to any more (blobs are shared by content: two authors' identical
photos) is moved out of the served store, so the origin answers 404 for it, and its URLs are
purged from the edge (:func:`purge`). The blob itself is deleted ``takedown_grace_s`` later by
the upload tier's sweeper (:meth:`Takedowns.sweep_trash`), which puts it back instead if a post
refers to it again by then (the same photo uploaded anew).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import numpy as np
from cassandra.cluster import Session

from core.settings import Settings
from core.statements import Statements
from media import ids
from media.blobs import BlobStore
from media.renditions import rendition_url

log = logging.getLogger("feedcast.serving.takedown")

BUCKETS = 8  # posts_removed and blob_trash partitions; a post's (a blob's) is its id % 8


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class NotAuthor(PermissionError):
    """The post is someone else's."""


@dataclass(frozen=True)
class Removal:
    post_id: int
    already: bool  # removed before: nothing more was done
    blobs_trashed: int  # blobs no other post uses, out of the served store
    purged: int  # rendition URLs the edge dropped (or did not hold)
    purge_failed: int  # URLs the edge could not be asked to drop
    delete_after_ms: int | None  # when the trashed blobs are deleted for good


class Takedowns:
    """The takedown tables, the blob store and the edge, for one session."""

    def __init__(
        self,
        settings: Settings,
        session: Session,
        stmts: Statements,
        blobs: BlobStore,
        on_removed: Callable[[int], None] | None = None,
    ):
        """``on_removed(post_id)``: called as soon as a post's ``posts_removed`` row is stored,
        before its media is touched (the feed replicas' :meth:`RemovedPosts.add`)."""
        self.s, self.session, self.stmts, self.blobs = settings, session, stmts, blobs
        self.on_removed = on_removed
        self.timeout_s = settings.cassandra_request_timeout_s
        p = session.prepare
        self._removed = p(
            "INSERT INTO posts_removed (bucket, post_id, author_id, removed_ms) "
            "VALUES (?, ?, ?, ?) USING TTL ?"
        )
        self._is_removed = p(
            "SELECT removed_ms FROM posts_removed WHERE bucket = ? AND post_id = ?"
        )
        self._upload = p("SELECT author_id, original, status FROM uploads WHERE post_id = ?")
        self._upload_removed = p(
            "UPDATE uploads SET status = 'removed', reason = 'taken down by its author', "
            "updated_ms = ? WHERE post_id = ?"
        )
        self._renditions = p("SELECT format, sha256 FROM renditions_by_post WHERE post_id = ?")
        self._drop_renditions = p("DELETE FROM renditions_by_post WHERE post_id = ?")
        self._unref = p("DELETE FROM blob_refs WHERE sha256 = ? AND post_id = ?")
        self._refs = p("SELECT post_id FROM blob_refs WHERE sha256 = ? LIMIT 1")
        self._trash = p(
            "INSERT INTO blob_trash (bucket, sha256, due_ms, post_id) VALUES (?, ?, ?, ?)"
        )
        self._trash_scan = p("SELECT sha256, due_ms FROM blob_trash WHERE bucket = ?")
        self._trash_done = p("DELETE FROM blob_trash WHERE bucket = ? AND sha256 = ?")

    def _run(self, stmt: Any, args: tuple[Any, ...]) -> Any:
        return self.session.execute(stmt, args, timeout=self.timeout_s)

    def remove(self, post_id: int, author_id: int) -> Removal:
        """Take ``post_id`` down for its author. LookupError: no such post; :class:`NotAuthor`:
        another author's. Idempotent: a second call finds it removed and does nothing."""
        post = self._run(self.stmts.get_post, (post_id,)).one()
        upload = self._run(self._upload, (post_id,)).one() if ids.is_upload_id(post_id) else None
        owner = post.author_id if post is not None else upload.author_id if upload else None
        if owner is None:
            raise LookupError(f"no post {post_id}")
        if int(owner) != author_id:
            raise NotAuthor(f"post {post_id} is not author {author_id}'s")
        bucket = post_id % BUCKETS
        already = self._run(self._is_removed, (bucket, post_id)).one() is not None
        if already and (upload is None or upload.status == "removed"):
            return Removal(post_id, True, 0, 0, 0, None)
        if not already:  # first: off the feeds before anything else
            keep_s = self.s.takedown_keep_days * 86400
            self._run(self._removed, (bucket, post_id, author_id, _now_ms(), keep_s))
        if self.on_removed is not None:  # a retry announces it again: harmless
            self.on_removed(post_id)
        if upload is None:  # an announced post: no stored media
            return Removal(post_id, False, 0, 0, 0, None)
        # Its media, the upload's status last: a takedown cut short is finished by a retry.
        return self.remove_media(post_id, upload.original)

    def remove_media(self, post_id: int, original: str | None) -> Removal:
        """The post's stored media out of the served store and the edge, its upload 'removed'.
        Also what an upload worker calls when the takedown came while it rendered."""
        rows = list(self._run(self._renditions, (post_id,)))
        used = {r.sha256: r.format for r in rows}
        if original:
            used.setdefault(original, "")
        due = _now_ms() + int(self.s.takedown_grace_s * 1000)
        trashed, urls = 0, []
        for digest, fmt in used.items():
            self._run(self._unref, (digest, post_id))
            if self._run(self._refs, (digest,)).one() is not None:
                continue  # another post shows the same bytes: they stay
            self._run(self._trash, (_bucket(digest), digest, due, post_id))
            trashed += self.blobs.trash(digest)
            if fmt:
                urls.append(rendition_url(self.s.media_url, digest, fmt))
        self._run(self._drop_renditions, (post_id,))
        self._run(self._upload_removed, (_now_ms(), post_id))
        failed = purge(urls, timeout_s=self.s.prefetch_timeout_s)
        log.info(
            "post %d taken down: %d blobs trashed, %d URLs purged, %d not",
            post_id, trashed, len(urls) - failed, failed,
        )  # fmt: skip
        return Removal(post_id, False, trashed, len(urls) - failed, failed, due if used else None)

    def sweep_trash(self, now_ms: int | None = None) -> dict[str, int]:
        """Trashed blobs whose grace period is over: deleted, or restored if a post refers to
        them again. Counts by outcome."""
        now = _now_ms() if now_ms is None else now_ms
        out = {"deleted": 0, "restored": 0}
        for bucket in range(BUCKETS):
            for row in self._run(self._trash_scan, (bucket,)):
                if row.due_ms > now:
                    continue
                if self._run(self._refs, (row.sha256,)).one() is not None:
                    out["restored"] += self.blobs.restore(row.sha256)
                else:
                    out["deleted"] += self.blobs.delete_trashed(row.sha256)
                self._run(self._trash_done, (bucket, row.sha256))
        return out


def _bucket(digest: str) -> int:
    return int(digest[:8], 16) % BUCKETS


def purge(urls: list[str], *, timeout_s: float) -> int:
    """Have the edge drop each URL (``<media_url>/purge/media/...``: the edge fetches it from
    the origin past its cache, and the origin's 404 replaces the cached copy; see
    ``stack/conf/nginx.conf``). Call it once the origin no longer has the objects. Returns how
    many were not purged: the edge unreachable, or still given the object by the origin."""
    failed = 0
    with httpx.Client(timeout=timeout_s) as client:
        for url in urls:
            base, sep, path = url.partition("/media/")
            try:
                status = client.get(f"{base}/purge/media/{path}").status_code if sep else 0
            except httpx.HTTPError as exc:
                log.warning("edge purge of %s failed: %s", url, exc)
                failed += 1
                continue
            if status != 404:
                log.warning("edge purge of %s answered %d", url, status)
                failed += 1
    return failed


class SharedEpoch(Protocol):
    """A value every replica can read and any can change (a Redis counter): what tells the
    replicas that ``posts_removed`` has a new row, so they re-read it only then."""

    def get(self) -> tuple[bytes | None, bool]:
        """(value, read): read False when the value could not be read."""

    def bump(self) -> None: ...


class RemovedPosts:
    """This replica's copy of ``posts_removed``: the ids every page leaves out. Kept by a thread
    of its own (:meth:`start`), never on the request path and whether or not requests come: a
    replica idle when a takedown lands serves its next page without it.

    Every ``refresh_s`` the thread reads the shared ``epoch`` (one Redis GET), which every
    takedown bumps (:meth:`add`); the table's 8 partitions are re-read only when it changed, when
    it cannot be read (Redis down: every ``refresh_s``, as without an epoch) and at least every
    ``full_refresh_s`` (a takedown whose bump was lost). Idle, that is 8 Cassandra reads per
    ``full_refresh_s`` per replica instead of per ``refresh_s``: a cost that grew with the
    replicas. A takedown this replica handled counts at once."""

    def __init__(
        self,
        session_of: Callable[[], Session],
        refresh_s: float,
        timeout_s: float,
        also: Callable[[], None] | None = None,
        *,
        epoch: SharedEpoch | None = None,
        full_refresh_s: float = 0.0,
    ) -> None:
        """``also``: more of the replica's periodic checks, run after each refresh.
        ``epoch`` None: the table is re-read every ``refresh_s``."""
        self._session_of, self.refresh_s, self.timeout_s = session_of, refresh_s, timeout_s
        self._also, self._epoch, self.full_refresh_s = also, epoch, full_refresh_s
        self._ids = np.empty(0, np.int64)
        self._recent: dict[int, float] = {}  # taken down here lately: kept through a refresh
        self._scan: Any = None
        self._seen: tuple[bytes | None, float] | None = None  # epoch at the last read, when
        self.reads = 0  # times the table was read

    def start(self) -> None:
        """Refresh now and every ``refresh_s`` for as long as the process lives (a daemon
        thread: it ends with the replica)."""
        threading.Thread(target=self._loop, name="removed-posts", daemon=True).start()

    def ids(self) -> np.ndarray:
        """The removed post ids (sorted)."""
        return self._ids

    def add(self, post_id: int) -> None:
        """``post_id`` was just recorded in ``posts_removed``: off this replica's pages now,
        and every other replica told to re-read the table (the epoch's bump)."""
        self._recent[post_id] = time.monotonic()
        self._ids = np.union1d(self._ids, np.array([post_id], np.int64))
        if self._epoch is not None:
            self._epoch.bump()

    def tick(self) -> bool:
        """One turn of the thread: read the table if it is due (see the class); whether it
        was read. Errors propagate (the copy is kept as it was)."""
        value, read = self._epoch.get() if self._epoch is not None else (None, False)
        if self._seen is not None and read:
            seen, at = self._seen
            if value == seen and time.monotonic() - at < self.full_refresh_s:
                return False
        self._seen = None  # until this read succeeds
        self.refresh()
        # The epoch was read before the table: a takedown bumped after it is seen next turn.
        self._seen = (value, time.monotonic()) if read else None
        return True

    def refresh(self) -> None:
        """Read the table now."""
        session = self._session_of()
        if self._scan is None:
            self._scan = session.prepare("SELECT post_id FROM posts_removed WHERE bucket = ?")
        futures = [
            session.execute_async(self._scan, (b,), timeout=self.timeout_s) for b in range(BUCKETS)
        ]
        found = [int(r.post_id) for f in futures for r in f.result()]
        # A refresh that read before a takedown here was stored must not drop it again.
        horizon = time.monotonic() - 2 * self.refresh_s - self.timeout_s
        self._recent = {p: t for p, t in self._recent.items() if t > horizon}
        self._ids = np.unique(np.array(found + list(self._recent), np.int64))
        self.reads += 1

    def _loop(self) -> None:
        while True:
            try:
                self.tick()
            except Exception as exc:  # kept as it was; tried again after refresh_s
                log.warning("removed posts not re-read: %s", exc)
            try:
                if self._also is not None:
                    self._also()
            except Exception as exc:
                log.warning("periodic check failed: %s", exc)
            time.sleep(self.refresh_s)
