"""Day buckets: the partition component that bounds timeline and log partitions."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd


def day_bucket(ts: datetime) -> int:
    """Days since the Unix epoch (UTC) of ``ts``."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return int(ts.timestamp() // 86_400)


def day_buckets(ts: pd.Series) -> np.ndarray:
    """Vectorised :func:`day_bucket` for a datetime series."""
    seconds = pd.to_datetime(ts, utc=True).astype("int64") // 1_000_000_000
    return (seconds // 86_400).to_numpy(dtype=np.int64)


def as_utc(ts: datetime) -> datetime:
    """Cassandra's driver returns naive datetimes that are UTC; make them aware."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
