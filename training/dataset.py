"""Point-in-time training sets: impressions joined with Feast's historical features."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from core import constants as C
from core.settings import Settings
from features import definitions
from features.pit import Engine, historical_features
from features.request import REQUEST_EPOCH
from features.store import FEATURE_COLUMNS, open_store

# post_created_epoch_s only feeds post_age_h; an absolute time is no signal for a ranker.
MODEL_FEATURES = tuple(f for f in FEATURE_COLUMNS if f != "post_created_epoch_s")


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame
    holdout: pd.DataFrame
    cutoff: pd.Timestamp


def entity_frame(rows: pd.DataFrame, posts: pd.DataFrame) -> pd.DataFrame:
    """Rows with user, post, event time → the entity frame Feast joins on (adds topic, author)."""
    meta = posts[[C.POST_ID, C.AUTHOR_ID, "topic"]].rename(columns={"topic": C.TOPIC})
    out = rows.drop(columns=[C.AUTHOR_ID, C.TOPIC], errors="ignore").merge(meta, on=C.POST_ID)
    out[REQUEST_EPOCH] = pd.to_datetime(out[C.EVENT_TS], utc=True).astype("int64") / 1e9
    return out


def point_in_time(
    settings: Settings,
    rows: pd.DataFrame,
    *,
    service: str = definitions.FEATURE_SERVICE,
    engine: Engine = "pandas",
) -> pd.DataFrame:
    """``rows`` (user_id, post_id, event_timestamp, ...) with every feature as of its own time."""
    posts = pd.read_parquet(settings.world_dir / "posts.parquet")
    joined = historical_features(open_store(settings), entity_frame(rows, posts), service, engine)
    for col in MODEL_FEATURES:
        if col in joined:
            joined[col] = joined[col].astype(np.float64)
    return joined


def explored_flags(settings: Settings, impressions: pd.DataFrame) -> np.ndarray:
    """Whether each impression's page was shown in random order (the served-page log's flag);
    False where the log has no flag (a service that never randomises)."""
    path = settings.world_dir / "requests.parquet"
    if not path.exists():
        return np.zeros(len(impressions), dtype=bool)
    pages = pd.read_parquet(path, columns=[C.REQUEST_ID, "explored"]).drop_duplicates(C.REQUEST_ID)
    flag = impressions[C.REQUEST_ID].map(pages.set_index(C.REQUEST_ID)["explored"])
    return flag.fillna(False).to_numpy(bool)


def training_frame(settings: Settings, impressions: pd.DataFrame | None = None) -> pd.DataFrame:
    """Logged impressions with their features (no leakage), ordered by request and position."""
    if impressions is None:
        impressions = pd.read_parquet(settings.world_dir / "impressions.parquet")
    if "explored" not in impressions:
        impressions = impressions.assign(explored=explored_flags(settings, impressions))
    joined = point_in_time(settings, impressions)
    joined = joined.sort_values([C.EVENT_TS, C.REQUEST_ID, C.POSITION], kind="stable")
    return joined.reset_index(drop=True)


def time_split(frame: pd.DataFrame, holdout_days: float = 1.0) -> Split:
    """Train on everything before the last ``holdout_days``; evaluate on those days."""
    cutoff = frame[C.EVENT_TS].max() - pd.Timedelta(days=holdout_days)
    return Split(frame[frame[C.EVENT_TS] < cutoff], frame[frame[C.EVENT_TS] >= cutoff], cutoff)
