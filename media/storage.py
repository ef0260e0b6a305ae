"""How soon the media store is full, from the capacity plan's upload forecast.

The capacity plan (``feedcast capacity plan`` / ``capacity schedule``) writes, per hour, the
uploads it expects (``upload_workers`` rows, ``expected_uploads``) and the bytes it assumes one
stored post takes (``bytes_per_post``). The upload tier knows the one thing the plan cannot: the
bytes stored *now*. :func:`days_until_full_now` puts the two together, the way the plan's
``days_until_full_p95`` was counted at planning time (:func:`days_until_full`, which lives here
because both the planner above and the upload tier need it).

Pure numpy: no Ray, no Cassandra. The caller reads the stored bytes and exports the gauge.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np


def days_until_full(stored_bytes: float, bytes_per_hour_p95: np.ndarray, capacity: float) -> float:
    """Days until ``capacity`` is reached at the forecast's p95 growth (extended at its mean)."""
    if stored_bytes >= capacity:
        return 0.0
    growth = np.asarray(bytes_per_hour_p95, dtype=np.float64)
    cum = stored_bytes + np.cumsum(growth)
    full = np.flatnonzero(cum >= capacity)
    if len(full):
        return float((full[0] + 1) / 24.0)
    rate = growth.mean()
    if rate <= 0:
        return math.inf
    return float((len(growth) + (capacity - cum[-1]) / rate) / 24.0)


def days_until_full_now(
    stored_bytes: float,
    capacity_bytes: float,
    expected_uploads_per_h: Sequence[float] | np.ndarray,
    bytes_per_post: float,
) -> float:
    """Days until the store (``capacity_bytes``) is full from ``stored_bytes`` now, if the
    uploads of the plan's coming hours (uploads per hour, from the current hour on:
    :func:`upcoming_uploads`) each store ``bytes_per_post`` bytes; past the plan's last hour
    at its mean. 0 when already full; NaN without a forecast hour (not known, which a gauge
    should show rather than an infinity that reads as "never")."""
    if not (math.isfinite(bytes_per_post) and bytes_per_post >= 0):
        raise ValueError("bytes_per_post must be finite and ≥ 0")
    uploads = np.asarray(expected_uploads_per_h, dtype=np.float64)
    if not np.all(np.isfinite(uploads)) or np.any(uploads < 0):
        raise ValueError("expected uploads per hour must be finite and ≥ 0")
    if stored_bytes >= capacity_bytes:
        return 0.0
    if not len(uploads):
        return math.nan
    return days_until_full(stored_bytes, uploads * bytes_per_post, capacity_bytes)


def upcoming_uploads(
    plan: Mapping[str, Any] | Sequence[Mapping[str, Any]], now_epoch_s: float
) -> np.ndarray:
    """The plan's expected uploads per hour from the hour containing ``now_epoch_s`` on (that
    hour whole). ``plan`` is the upload policy's kwargs (``hours``, ``expected_uploads``:
    :func:`serving.autoscaling.load_upload_plan`) or the schedule's ``upload_workers`` rows,
    consecutive hours as the planner writes them. Before the plan starts it is the whole plan
    (its first hour stands in for now: the store fills no later than that); empty past its
    last hour, or where the plan predates ``expected_uploads`` (the floor still runs on it)."""
    if isinstance(plan, Mapping):
        hours = list(plan.get("hours") or [])
        expected = plan.get("expected_uploads")
    else:
        hours = [row["hour"] for row in plan]
        has_all = bool(plan) and all("expected_uploads" in row for row in plan)
        expected = [row["expected_uploads"] for row in plan] if has_all else None
    if not hours or expected is None:
        return np.zeros(0)
    start = _epoch_s(str(hours[0]))
    hour = max(math.floor((now_epoch_s - start) / 3600.0), 0)
    return np.asarray(expected, dtype=np.float64)[hour:]


def _epoch_s(hour: str) -> float:
    """An ISO hour start as epoch seconds (no zone: UTC, as the planner writes them)."""
    t = datetime.fromisoformat(hour)
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()
