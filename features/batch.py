"""Batch feature computation from the interaction log: point-in-time snapshots.

Each snapshot at time T aggregates only what happened strictly before T and is stamped T, so a
point-in-time join for an impression at t sees the latest snapshot at or before t and nothing
from its future.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from core import constants as C

SNAPSHOT_EVERY_H = 6
WINDOW = pd.Timedelta(days=7)
PRIOR_RATE, PRIOR_WEIGHT = 0.08, 20.0  # smoothing: rates shrink to a prior with few impressions


def snapshot_times(start: pd.Timestamp, end: pd.Timestamp) -> pd.DatetimeIndex:
    """``start`` and every SNAPSHOT_EVERY_H hours after it, and ``end`` (the freshest view).

    A row must exist from ``start`` on: Feast's file store drops entity rows with no feature row
    in the TTL window instead of returning nulls.
    """
    every = pd.date_range(start, end, freq=f"{SNAPSHOT_EVERY_H}h")
    return every.union(pd.DatetimeIndex([end]))


def _rate(hits: pd.Series, n: pd.Series) -> pd.Series:
    return (hits + PRIOR_RATE * PRIOR_WEIGHT) / (n + PRIOR_WEIGHT)


def user_stats(
    impressions: pd.DataFrame, follows: pd.DataFrame, times: pd.DatetimeIndex
) -> pd.DataFrame:
    following = follows.groupby(C.USER_ID).size()
    frames = []
    for t in times:
        w = impressions[(impressions[C.EVENT_TS] < t) & (impressions[C.EVENT_TS] >= t - WINDOW)]
        g = w.groupby(C.USER_ID).agg(n=(C.POST_ID, "size"), likes=(C.LIKE, "sum"))
        g = g.reindex(following.index, fill_value=0)
        frames.append(
            pd.DataFrame(
                {
                    C.USER_ID: g.index.to_numpy(),
                    C.EVENT_TS: t,
                    "user_impressions_7d": g["n"].to_numpy(np.int64),
                    "user_likes_7d": g["likes"].to_numpy(np.int64),
                    "user_like_rate_7d": _rate(g["likes"], g["n"]).to_numpy(np.float64),
                    "user_following": following.to_numpy(np.int64),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def post_stats(
    impressions: pd.DataFrame, posts: pd.DataFrame, times: pd.DatetimeIndex
) -> pd.DataFrame:
    frames = []
    for t in times:
        live = posts[posts["created_at"] < t]
        w = impressions[impressions[C.EVENT_TS] < t]
        g = w.groupby(C.POST_ID).agg(n=(C.USER_ID, "size"), likes=(C.LIKE, "sum"))
        g = g.reindex(live[C.POST_ID].to_numpy(), fill_value=0)
        frames.append(
            pd.DataFrame(
                {
                    C.POST_ID: g.index.to_numpy(),
                    C.EVENT_TS: t,
                    "post_impressions": g["n"].to_numpy(np.int64),
                    "post_likes": g["likes"].to_numpy(np.int64),
                    "post_like_rate": _rate(g["likes"], g["n"]).to_numpy(np.float64),
                    "post_topic": live["topic"].to_numpy(np.int64),
                }
            )
        )
    # A birth row per post (nothing seen yet), so a post younger than the last snapshot still
    # joins: Feast's file store would drop the impression rather than return nulls.
    frames.append(
        pd.DataFrame(
            {
                C.POST_ID: posts[C.POST_ID].to_numpy(),
                C.EVENT_TS: posts["created_at"].to_numpy(),
                "post_impressions": 0,
                "post_likes": 0,
                "post_like_rate": PRIOR_RATE,
                "post_topic": posts["topic"].to_numpy(np.int64),
            }
        )
    )
    return pd.concat(frames, ignore_index=True)


def author_stats(
    impressions: pd.DataFrame, posts: pd.DataFrame, users: pd.DataFrame, times: pd.DatetimeIndex
) -> pd.DataFrame:
    authors = np.sort(posts[C.AUTHOR_ID].unique())
    followers = users.set_index(C.USER_ID)["follower_count"].reindex(authors).fillna(0)
    frames = []
    for t in times:
        p = posts[(posts["created_at"] < t) & (posts["created_at"] >= t - WINDOW)]
        w = impressions[(impressions[C.EVENT_TS] < t) & (impressions[C.EVENT_TS] >= t - WINDOW)]
        g = w.groupby(C.AUTHOR_ID).agg(n=(C.USER_ID, "size"), likes=(C.LIKE, "sum"))
        g = g.reindex(authors, fill_value=0)
        frames.append(
            pd.DataFrame(
                {
                    C.AUTHOR_ID: authors,
                    C.EVENT_TS: t,
                    "author_followers": followers.to_numpy(np.int64),
                    "author_posts_7d": p.groupby(C.AUTHOR_ID)
                    .size()
                    .reindex(authors, fill_value=0)
                    .to_numpy(np.int64),
                    "author_like_rate_7d": _rate(g["likes"], g["n"]).to_numpy(np.float64),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def build_feature_tables(world_dir: Path, out_dir: Path) -> dict[str, int]:
    """Read the world's parquet log and write the three feature tables Feast serves."""
    imp = pd.read_parquet(world_dir / "impressions.parquet")
    posts = pd.read_parquet(world_dir / "posts.parquet")
    users = pd.read_parquet(world_dir / "users.parquet")
    follows = pd.read_parquet(world_dir / "follows.parquet")
    start = posts["created_at"].min().floor("h")
    end = max(imp[C.EVENT_TS].max(), posts["created_at"].max()).ceil("h")
    times = snapshot_times(start, end)
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = {
        "user_stats": user_stats(imp, follows, times),
        "post_stats": post_stats(imp, posts, times),
        "author_stats": author_stats(imp, posts, users, times),
    }
    for name, df in tables.items():
        df[C.CREATED_TS] = df[C.EVENT_TS]
        tmp = out_dir / f".{name}.parquet.tmp"
        df.to_parquet(tmp, index=False)
        tmp.replace(out_dir / f"{name}.parquet")
    return {k: len(v) for k, v in tables.items()}
