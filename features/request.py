"""Request-time features, computed by the same function in Feast, training and serving."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

REQUEST_EPOCH = "request_epoch_s"


def request_time_arrays(request_epoch_s: Any, created_epoch_s: Any) -> dict[str, np.ndarray]:
    """``post_age_h`` at request time, UTC ``hour_of_day`` and ``day_of_week`` (Monday = 0),
    as arrays (a scalar request time broadcasts over the posts)."""
    req = np.asarray(request_epoch_s, dtype=np.float64)
    created = np.asarray(created_epoch_s, dtype=np.float64)
    days = np.floor(req / 86_400.0)
    return {
        "post_age_h": np.clip((req - created) / 3600.0, 0.0, None),
        "hour_of_day": np.broadcast_to(np.floor((req - days * 86_400.0) / 3600.0), created.shape),
        "day_of_week": np.broadcast_to(np.mod(days + 3, 7), created.shape),  # 1970-01-01: Thu
    }


def request_time_features(request_epoch_s: pd.Series, created_epoch_s: pd.Series) -> pd.DataFrame:
    """:func:`request_time_arrays` as the DataFrame Feast's on-demand view returns."""
    return pd.DataFrame(request_time_arrays(request_epoch_s, created_epoch_s))
