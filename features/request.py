"""Request-time features, computed the same way in training and in serving."""

from __future__ import annotations

import numpy as np
import pandas as pd


def request_features(
    request_ts: pd.Series | pd.Timestamp, created_at: pd.Series, position: pd.Series | np.ndarray
) -> pd.DataFrame:
    """``post_age_h`` at request time and ``position_hint`` (the slot the logged page had).

    At serving time every candidate gets ``position_hint = 0``: we rank as if each item were
    shown first, which removes the logging policy's position bias from the comparison.
    """
    created = pd.to_datetime(created_at, utc=True)
    req = pd.to_datetime(request_ts, utc=True)
    age_h = (req - created).dt.total_seconds() / 3600.0
    return pd.DataFrame(
        {
            "post_age_h": np.clip(np.asarray(age_h, dtype=np.float64), 0.0, None),
            "position_hint": np.asarray(position, dtype=np.float64),
        }
    )
