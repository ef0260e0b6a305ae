"""The storage plan, live: how many days until the blob store is full, exported as a gauge.

The upload tier's sweeper calls :meth:`StorageGauge.update`: what the store holds now (a walk
of the store, at most every ``MIN_INTERVAL_S``), its size (``blob_capacity_bytes``; else a
local store's disk; else the plan's ``storage_capacity_bytes``), and the capacity plan's
forecast uploads per hour from this hour on, times its stored bytes per post
(``media.storage.days_until_full_now``). Without a plan that has an upload forecast the gauge
is NaN: not known, rather than a number that reads as safe.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from typing import Any

import yaml

from core.settings import Settings
from media.blobs import BlobStore
from media.storage import days_until_full_now, upcoming_uploads
from serving.autoscaling import load_upload_plan

log = logging.getLogger("feedcast.serving.storage")

MIN_INTERVAL_S = 60.0  # a walk of the store costs in proportion to its objects


class StorageGauge:
    def __init__(self, settings: Settings, blobs: BlobStore) -> None:
        self.s, self.blobs = settings, blobs
        self.plan: dict[str, Any] | None = None
        self.plan_capacity: float | None = None
        if settings.serve_capacity_plan is not None:
            self.plan = load_upload_plan(settings.serve_capacity_plan)
            raw = yaml.safe_load(settings.serve_capacity_plan.read_text()) or {}
            cap = (raw.get("config") or {}).get("storage_capacity_bytes")
            self.plan_capacity = float(cap) if cap else None
        self._at = -math.inf
        self._gauges: Any = None

    def capacity(self, stored: float) -> float:
        if self.s.blob_capacity_bytes:
            return float(self.s.blob_capacity_bytes)
        if "file" in _protocols(self.blobs.fs):
            return stored + shutil.disk_usage(self.blobs.root).free
        return self.plan_capacity or math.nan

    def measure(self, now_s: float | None = None) -> dict[str, float]:
        """Stored bytes, capacity and days until full, now."""
        root = self.blobs.root
        stored = float(self.blobs.fs.du(root)) if self.blobs.fs.exists(root) else 0.0
        capacity = self.capacity(stored)
        days = math.nan
        per_post = (self.plan or {}).get("bytes_per_post")
        if self.plan is not None and per_post is not None and math.isfinite(capacity):
            coming = upcoming_uploads(self.plan, time.time() if now_s is None else now_s)
            days = days_until_full_now(stored, capacity, coming, float(per_post))
        return {"stored_bytes": stored, "capacity_bytes": capacity, "days_until_full": days}

    def update(self) -> dict[str, float]:
        """Measure and export, at most every ``MIN_INTERVAL_S``; {} when not due."""
        if time.monotonic() - self._at < MIN_INTERVAL_S:
            return {}
        self._at = time.monotonic()
        out = self.measure()
        if self._gauges is None:
            self._gauges = _gauges()
        for name, gauge in self._gauges.items():
            gauge.set(out[name])
        return {}  # measured: not worth a log line each minute


def _protocols(fs: Any) -> tuple[str, ...]:
    p = fs.protocol
    return tuple(p) if isinstance(p, (tuple, list)) else (p,)


def _gauges() -> dict[str, Any]:
    from ray.util.metrics import Gauge  # lazy: only in the upload worker, where Ray runs

    return {
        "stored_bytes": Gauge("feedcast_storage_bytes", "Bytes the blob store holds"),
        "capacity_bytes": Gauge("feedcast_storage_capacity_bytes", "Size of the blob store"),
        "days_until_full": Gauge(
            "feedcast_storage_days_until_full",
            "Days until the blob store is full at the capacity plan's forecast uploads "
            "(NaN: no plan with an upload forecast)",
        ),
    }
