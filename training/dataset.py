"""Point-in-time training sets: impressions joined with Feast's historical features."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from core import constants as C
from core.settings import Settings
from features import definitions
from features.request import request_features
from features.store import FEATURE_COLUMNS, open_store

MODEL_FEATURES = (*FEATURE_COLUMNS, *C.REQUEST_FEATURES)


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame
    holdout: pd.DataFrame
    cutoff: pd.Timestamp


def training_frame(settings: Settings, impressions: pd.DataFrame | None = None) -> pd.DataFrame:
    """Impressions with every model feature as of the impression's own time (no leakage)."""
    if impressions is None:
        impressions = pd.read_parquet(settings.world_dir / "impressions.parquet")
    posts = pd.read_parquet(settings.world_dir / "posts.parquet")[[C.POST_ID, "created_at"]]
    store = open_store(settings)
    service = store.get_feature_service(definitions.FEATURE_SERVICE)
    entity_df = impressions.drop(columns=["created_at"], errors="ignore")
    joined = store.get_historical_features(entity_df=entity_df, features=service).to_df()
    if len(joined) != len(entity_df):
        # Feast's file store collapses entity rows sharing (join key, timestamp); ours are unique.
        raise ValueError(
            f"point-in-time join returned {len(joined)} rows for {len(entity_df)} impressions: "
            "impression timestamps must be unique per user and per post"
        )
    joined = joined.merge(posts, on=C.POST_ID, how="left")
    req = request_features(joined[C.EVENT_TS], joined["created_at"], joined[C.POSITION])
    joined = pd.concat([joined.reset_index(drop=True), req.reset_index(drop=True)], axis=1)
    joined = joined.sort_values([C.EVENT_TS, C.REQUEST_ID, C.POSITION], kind="stable")
    for col in MODEL_FEATURES:
        joined[col] = joined[col].astype(np.float64)
    return joined.reset_index(drop=True)


def time_split(frame: pd.DataFrame, holdout_days: float = 1.0) -> Split:
    """Train on everything before the last ``holdout_days``; evaluate on those days."""
    cutoff = frame[C.EVENT_TS].max() - pd.Timedelta(days=holdout_days)
    return Split(frame[frame[C.EVENT_TS] < cutoff], frame[frame[C.EVENT_TS] >= cutoff], cutoff)
