"""Batch feature computation from the interaction log: point-in-time snapshots.

Every row stamped T aggregates only what happened strictly before T, so a point-in-time join
for an impression at t sees the latest row at or before t and nothing from its future.

- Dense hourly rows (windowed counts that must decay): ``user_stats``, ``post_stats`` (while the
  post is young enough to be a candidate), ``author_stats``.
- Event-driven rows (cumulative counts that only change with activity): ``user_topic_stats``,
  ``user_author_stats``; one row at the end of each hour in which the pair had impressions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from core import constants as C

PRIOR_RATE, PRIOR_WEIGHT = 0.06, 20.0  # rates shrink to a prior when there are few impressions
POST_ROWS_H = 72  # hourly post rows for this long after creation (candidates are younger)
WINDOWS_H = {"1h": 1, "1d": 24, "7d": 168}


def rate(hits: np.ndarray, n: np.ndarray, prior: float = PRIOR_RATE) -> np.ndarray:
    return (hits + prior * PRIOR_WEIGHT) / (n + PRIOR_WEIGHT)


def _hour_index(ts: pd.Series, start: pd.Timestamp) -> np.ndarray:
    return ((ts - start) // pd.Timedelta(hours=1)).to_numpy(np.int64)


def _dense(
    keys: np.ndarray, hours: np.ndarray, values: np.ndarray, n_keys: int, n_hours: int
) -> np.ndarray:
    """entity × hour matrix of summed ``values`` (events in hour h go to column h)."""
    out = np.zeros((n_keys, n_hours))
    np.add.at(out, (keys, np.clip(hours, 0, n_hours - 1)), values)
    return out


def _trailing(m: np.ndarray, w: int) -> np.ndarray:
    """out[:, t] = sum of m[:, t-w : t] — events of the w hours before boundary t (exclusive)."""
    c = np.concatenate([np.zeros((m.shape[0], 1)), np.cumsum(m, axis=1)], axis=1)
    t = np.arange(c.shape[1])
    return c[:, t] - c[:, np.maximum(t - w, 0)]


def _stamp(start: pd.Timestamp, t: np.ndarray) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(start + pd.to_timedelta(t, unit="h"))


def user_stats(
    imp: pd.DataFrame, follows: pd.DataFrame, users: np.ndarray, start, n_hours
) -> pd.DataFrame:
    k = np.searchsorted(users, imp[C.USER_ID].to_numpy())
    h = _hour_index(imp[C.EVENT_TS], start)
    one = np.ones(len(imp))
    dense = {
        "n": _dense(k, h, one, len(users), n_hours),
        "likes": _dense(k, h, imp[C.LIKE].to_numpy(float), len(users), n_hours),
        "eng": _dense(k, h, (imp[C.COMMENT] | imp[C.SAVE]).to_numpy(float), len(users), n_hours),
        "dwell": _dense(k, h, imp["dwell_s"].to_numpy(float), len(users), n_hours),
    }
    cols: dict[str, np.ndarray] = {}
    for name, w in WINDOWS_H.items():
        n = _trailing(dense["n"], w)
        likes = _trailing(dense["likes"], w)
        cols[f"user_impressions_{name}"] = n
        cols[f"user_likes_{name}"] = likes
        if name != "1h":
            cols[f"user_like_rate_{name}"] = rate(likes, n)
    n7 = cols["user_impressions_7d"]
    cols["user_engage_rate_7d"] = rate(_trailing(dense["eng"], 168), n7, 0.02)
    cols["user_dwell_mean_7d"] = (_trailing(dense["dwell"], 168) + 2.0 * 5) / (n7 + 5)
    following = follows.groupby(C.USER_ID).size().reindex(users, fill_value=0).to_numpy()
    t = np.arange(n_hours + 1)
    frame = pd.DataFrame(
        {
            C.USER_ID: np.repeat(users, len(t)),
            C.EVENT_TS: np.tile(_stamp(start, t), len(users)),
            **{c: v.ravel() for c, v in cols.items()},
            "user_following": np.repeat(following, len(t)),
        }
    )
    return frame


def post_stats(imp: pd.DataFrame, posts: pd.DataFrame, start, n_hours) -> pd.DataFrame:
    ids = posts[C.POST_ID].to_numpy()
    k = np.searchsorted(ids, imp[C.POST_ID].to_numpy())
    h = _hour_index(imp[C.EVENT_TS], start)
    one = np.ones(len(imp))
    m_n = _dense(k, h, one, len(ids), n_hours)
    m_l = _dense(k, h, imp[C.LIKE].to_numpy(float), len(ids), n_hours)
    m_e = _dense(k, h, (imp[C.COMMENT] | imp[C.SAVE]).to_numpy(float), len(ids), n_hours)
    cum_n, cum_l, cum_e = (_trailing(m, n_hours + 1) for m in (m_n, m_l, m_e))
    n1, l1, l6 = _trailing(m_n, 1), _trailing(m_l, 1), _trailing(m_l, 6)
    born = np.clip(((posts["created_at"] - start) / pd.Timedelta(hours=1)).to_numpy(), 0, None)
    first = np.ceil(born).astype(np.int64)
    rows_k, rows_t = [], []
    for i, f in enumerate(first.tolist()):
        t = np.arange(f, min(f + POST_ROWS_H, n_hours) + 1)
        rows_k.append(np.full(len(t), i))
        rows_t.append(t)
    rk, rt = np.concatenate(rows_k), np.concatenate(rows_t)
    meta = {
        "post_topic": posts["topic"].to_numpy(np.int64),
        "post_is_video": (posts["media_kind"] == "video").to_numpy(np.int64),
        "post_media_kb": (posts["media_bytes"].to_numpy() / 1024.0),
        "post_created_epoch_s": posts["created_at"].astype("int64").to_numpy() / 1e9,
    }
    hourly = pd.DataFrame(
        {
            C.POST_ID: ids[rk],
            C.EVENT_TS: _stamp(start, rt),
            "post_impressions": cum_n[rk, rt],
            "post_likes": cum_l[rk, rt],
            "post_like_rate": rate(cum_l[rk, rt], cum_n[rk, rt]),
            "post_engage_rate": rate(cum_e[rk, rt], cum_n[rk, rt], 0.02),
            "post_impressions_1h": n1[rk, rt],
            "post_likes_1h": l1[rk, rt],
            "post_likes_6h": l6[rk, rt],
            **{c: v[rk] for c, v in meta.items()},
        }
    )
    # A birth row (nothing seen yet) so a post younger than the next hour still joins.
    birth = pd.DataFrame(
        {
            C.POST_ID: ids,
            C.EVENT_TS: posts["created_at"].to_numpy(),
            "post_impressions": 0.0,
            "post_likes": 0.0,
            "post_like_rate": PRIOR_RATE,
            "post_engage_rate": 0.02,
            "post_impressions_1h": 0.0,
            "post_likes_1h": 0.0,
            "post_likes_6h": 0.0,
            **meta,
        }
    )
    return pd.concat([birth, hourly], ignore_index=True)


def author_stats(imp, posts, users: pd.DataFrame, start, n_hours) -> pd.DataFrame:
    authors = np.sort(posts[C.AUTHOR_ID].unique())
    k = np.searchsorted(authors, imp[C.AUTHOR_ID].to_numpy())
    h = _hour_index(imp[C.EVENT_TS], start)
    m_n = _dense(k, h, np.ones(len(imp)), len(authors), n_hours)
    m_l = _dense(k, h, imp[C.LIKE].to_numpy(float), len(authors), n_hours)
    m_s = _dense(k, h, imp[C.SAVE].to_numpy(float), len(authors), n_hours)
    pk = np.searchsorted(authors, posts[C.AUTHOR_ID].to_numpy())
    m_p = _dense(
        pk, _hour_index(posts["created_at"], start), np.ones(len(posts)), len(authors), n_hours
    )
    n7, l7, s7, p7 = (_trailing(m, 168) for m in (m_n, m_l, m_s, m_p))
    followers = users.set_index(C.USER_ID)["follower_count"].reindex(authors).fillna(0).to_numpy()
    t = np.arange(n_hours + 1)
    return pd.DataFrame(
        {
            C.AUTHOR_ID: np.repeat(authors, len(t)),
            C.EVENT_TS: np.tile(_stamp(start, t), len(authors)),
            "author_followers": np.repeat(followers, len(t)).astype(float),
            "author_posts_7d": p7.ravel(),
            "author_impressions_7d": n7.ravel(),
            "author_like_rate_7d": rate(l7, n7).ravel(),
            "author_save_rate_7d": rate(s7, n7, 0.01).ravel(),
        }
    )


def _pair_stats(imp: pd.DataFrame, key: str, start: pd.Timestamp, prefix: str) -> pd.DataFrame:
    """Cumulative counts per (user, key), one row at the end of each hour with activity."""
    df = imp[[C.USER_ID, key, C.LIKE, C.COMMENT, C.SAVE, C.EVENT_TS]].copy()
    df["hour"] = _hour_index(df[C.EVENT_TS], start)
    df["eng"] = df[C.COMMENT] | df[C.SAVE]
    g = df.groupby([C.USER_ID, key, "hour"], sort=True).agg(
        n=(C.LIKE, "size"), likes=(C.LIKE, "sum"), eng=("eng", "sum")
    )
    g = g.groupby(level=[0, 1]).cumsum().reset_index()
    return pd.DataFrame(
        {
            C.USER_ID: g[C.USER_ID].to_numpy(),
            key: g[key].to_numpy(),
            C.EVENT_TS: _stamp(start, g["hour"].to_numpy() + 1),
            f"{prefix}_impressions": g["n"].to_numpy(float),
            f"{prefix}_likes": g["likes"].to_numpy(float),
            f"{prefix}_like_rate": rate(g["likes"].to_numpy(float), g["n"].to_numpy(float)),
            f"{prefix}_engagements": g["eng"].to_numpy(float),
        }
    )


def build_feature_tables(world_dir: Path, out_dir: Path) -> dict[str, int]:
    """Read the world's parquet log and write the feature tables Feast serves."""
    imp = pd.read_parquet(world_dir / "impressions.parquet")
    posts = pd.read_parquet(world_dir / "posts.parquet")
    users = pd.read_parquet(world_dir / "users.parquet")
    follows = pd.read_parquet(world_dir / "follows.parquet")
    start = min(posts["created_at"].min(), imp[C.EVENT_TS].min()).floor("h")
    end = max(imp[C.EVENT_TS].max(), posts["created_at"].max()).ceil("h")
    n_hours = int((end - start) / pd.Timedelta(hours=1))
    imp = imp.merge(posts[[C.POST_ID, "topic"]].rename(columns={"topic": C.TOPIC}), on=C.POST_ID)
    tables = {
        "user_stats": user_stats(imp, follows, users[C.USER_ID].to_numpy(), start, n_hours),
        "post_stats": post_stats(imp, posts.sort_values(C.POST_ID), start, n_hours),
        "author_stats": author_stats(imp, posts, users, start, n_hours),
        "user_topic_stats": _pair_stats(imp, C.TOPIC, start, "user_topic"),
        "user_author_stats": _pair_stats(imp, C.AUTHOR_ID, start, "user_author"),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        df[C.CREATED_TS] = df[C.EVENT_TS]
        tmp = out_dir / f".{name}.parquet.tmp"
        df.to_parquet(tmp, index=False)
        tmp.replace(out_dir / f"{name}.parquet")  # atomic: a crash never leaves half a file
    return {k: len(v) for k, v in tables.items()}
