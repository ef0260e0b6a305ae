"""Impressions written in bursts, not one Cassandra request per page.

Cassandra 5's thread pools spin for a while each time work arrives, so what a trickle of small
requests costs it is mostly that spinning: a third of a core from a few dozen requests a second
up, whatever the requests are (docs/PERFORMANCE.md). A replica therefore queues each served
page's impression rows and a writer thread sends everything queued every
``impressions_flush_s`` at once: one unlogged single-partition batch per page (a page's rows
share the (user, day) partition), all in flight together. A page is in Cassandra within about
that long; the export reads impressions long after.

What cannot be written is logged and counted (``degraded{step="impressions"}``), as before;
a queue over ``max_pages`` (Cassandra slow for long) drops the newest pages, counted the same.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cassandra.cluster import Session
from cassandra.query import BatchStatement, BatchType

from core.db import consistency
from core.settings import Settings
from core.statements import Statements
from serving.metrics import Metrics

log = logging.getLogger("feedcast.serving.impressions")


@dataclass(frozen=True)
class Page:
    """One served page's impression rows (``insert_impression`` arguments)."""

    request_id: str
    rows: Sequence[tuple[object, ...]]


class ImpressionLog:
    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        db: Callable[[], tuple[Session, Statements]],
        *,
        max_pages: int = 5_000,
    ) -> None:
        self.s, self.metrics, self._db = settings, metrics, db
        self.flush_s, self.max_pages = settings.impressions_flush_s, max_pages
        self._pending: list[Page] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        # False from a failed write to the next successful one: pages served meanwhile say
        # `impressions` in their degraded list (they are queued, and likely lost).
        self.healthy = True
        self._thread = threading.Thread(target=self._run, name="impressions", daemon=True)
        self._thread.start()

    def add(self, page: Page) -> bool:
        """Queue a page's rows; False (counted) when the queue is full."""
        with self._lock:
            if len(self._pending) >= self.max_pages:
                full = True
            else:
                full = False
                self._pending.append(page)
        if full:
            log.warning(
                "impressions of %s dropped: %d pages queued", page.request_id, self.max_pages
            )
            self.metrics.degraded("impressions")
        return not full

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(5.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_s)
            self._wake.clear()
            with self._lock:
                pages, self._pending = self._pending, []
            if pages:
                self._write(pages)

    def _write(self, pages: list[Page]) -> None:
        try:
            session, stmts = self._db()
        except Exception as exc:  # Cassandra unreachable: these pages stay unlogged
            log.warning("impressions of %d pages not logged: %s", len(pages), exc)
            self.healthy = False
            for _ in pages:
                self.metrics.degraded("impressions")
            return
        level = consistency(self.s.cassandra_write_consistency)
        futures = []
        for page in pages:
            batch = BatchStatement(batch_type=BatchType.UNLOGGED, consistency_level=level)
            for row in page.rows:
                batch.add(stmts.insert_impression, row)
            try:
                futures.append(
                    (page, session.execute_async(batch, timeout=self.s.cassandra_request_timeout_s))
                )
            except Exception as exc:
                log.warning("impressions of %s not logged: %s", page.request_id, exc)
                self.metrics.degraded("impressions")
        failed = False
        for page, fut in futures:  # all in flight together
            try:
                fut.result()
            except Exception as exc:
                log.warning("impressions of %s not logged: %s", page.request_id, exc)
                self.metrics.degraded("impressions")
                failed = True
        self.healthy = not failed
