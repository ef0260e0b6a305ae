"""The popular list: recent posts with the most likes, published to Redis at materialization.

Serving reads it as its explore candidate source (out-of-network posts) and, when Cassandra is
down and a user has no cached page, as the last-resort page.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd

from core import cache
from core import constants as C
from core.settings import Settings

RECENT_H = 48  # only posts this young are popular candidates (the timeline's reach)


def popular_items(
    post_stats: pd.DataFrame, posts: pd.DataFrame, end: datetime, size: int
) -> list[cache.CachedItem]:
    """The ``size`` posts younger than ``RECENT_H`` at ``end`` with the most likes in the six
    hours before ``end`` (ties: more likes overall, then newer), from rows stamped at or before
    ``end`` only: the list never knows the future."""
    end_ts = pd.Timestamp(end).tz_convert(UTC) if pd.Timestamp(end).tzinfo else pd.Timestamp(end)
    stats = post_stats[post_stats[C.EVENT_TS] <= end_ts]
    latest = stats.sort_values(C.EVENT_TS).groupby(C.POST_ID, sort=False).tail(1)
    age_h = (end_ts.timestamp() - latest["post_created_epoch_s"].to_numpy()) / 3600.0
    latest = latest[(age_h >= 0) & (age_h <= RECENT_H)]
    latest = latest.merge(posts[[C.POST_ID, C.AUTHOR_ID]], on=C.POST_ID)
    top = latest.sort_values(
        ["post_likes_6h", "post_likes", "post_created_epoch_s"], ascending=False
    ).head(size)
    return [
        cache.CachedItem(
            post_id=int(r.post_id),
            author_id=int(r.author_id),
            topic=int(r.post_topic),
            created_epoch_s=float(r.post_created_epoch_s),
            score=float(r.post_likes_6h),
        )
        for r in top.itertuples(index=False)
    ]


def publish(settings: Settings, end: datetime | None = None) -> int:
    """Compute the popular list from the world's feature tables and store it in Redis."""
    end = end or datetime.now(UTC)
    tables = settings.world_dir / "features"
    stats = pd.read_parquet(
        tables / "post_stats.parquet",
        columns=[
            C.POST_ID,
            C.EVENT_TS,
            "post_likes",
            "post_likes_6h",
            "post_topic",
            "post_created_epoch_s",
        ],
    )
    posts = pd.read_parquet(settings.world_dir / "posts.parquet", columns=[C.POST_ID, C.AUTHOR_ID])
    items = popular_items(stats, posts, end, settings.popular_size)
    r = cache.client(settings, timeout_s=max(settings.redis_timeout_s, 5.0))
    try:
        r.set(cache.popular_key(settings), cache.dump_items(items))
    finally:
        r.close()
    return int(np.int64(len(items)))
