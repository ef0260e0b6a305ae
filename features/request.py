"""Request-time features, computed by the same function in Feast, training and serving."""

from __future__ import annotations

import numpy as np
import pandas as pd

REQUEST_EPOCH = "request_epoch_s"


def request_time_features(request_epoch_s: pd.Series, created_epoch_s: pd.Series) -> pd.DataFrame:
    """``post_age_h`` at request time, UTC ``hour_of_day`` and ``day_of_week`` (Monday = 0)."""
    req = np.asarray(request_epoch_s, dtype=np.float64)
    created = np.asarray(created_epoch_s, dtype=np.float64)
    days = np.floor(req / 86_400.0)
    return pd.DataFrame(
        {
            "post_age_h": np.clip((req - created) / 3600.0, 0.0, None),
            "hour_of_day": np.floor((req - days * 86_400.0) / 3600.0),
            "day_of_week": np.mod(days + 3, 7),  # 1970-01-01 was a Thursday
        }
    )
