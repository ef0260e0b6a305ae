"""Generate a world: follow graph, authors, posts, media, sessions and engagement.

Pure and deterministic: the same :class:`WorldConfig` gives the same frames.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pandas as pd
from tqdm import tqdm

from core import constants as C
from simulator import truth
from simulator.config import WorldConfig


@dataclass(frozen=True)
class World:
    config: WorldConfig
    users: pd.DataFrame  # user_id, created_at, follower_count, following_count
    posts: pd.DataFrame  # post_id, author_id, created_at, topic, media_kind, media_bytes
    follows: pd.DataFrame  # user_id, followee_id
    impressions: pd.DataFrame  # one row per shown item, labels and the oracle's probabilities
    interactions: pd.DataFrame  # event_id, user_id, post_id, author_id, kind, event_timestamp


SCROLL_S = 2.0  # seconds between two items of a session coming into view


def _ts(config: WorldConfig, hours: np.ndarray) -> pd.DatetimeIndex:
    """Timestamps at millisecond precision (what Cassandra stores)."""
    return (pd.to_datetime(config.start) + pd.to_timedelta(hours, unit="h")).floor("ms")


def generate(config: WorldConfig, progress: bool = False) -> World:
    rng = np.random.default_rng(config.seed)
    n = config.users
    user_ids = np.arange(1, n + 1, dtype=np.int64)

    # Authors, their popularity (Pareto: a few very large accounts), quality and main topic.
    n_authors = max(2, round(config.author_share * n))
    authors = np.sort(rng.choice(user_ids, size=n_authors, replace=False))
    popularity = 1.0 + rng.pareto(config.popularity_shape, n_authors)
    quality = rng.normal(0.0, 1.0, n_authors)
    main_topic = rng.integers(0, config.topics, n_authors)

    # Tastes: a sparse Dirichlet per user over topics.
    taste = rng.dirichlet(np.full(config.topics, 0.3), n)

    # Follow graph: preferential by popularity, lognormal out-degree.
    prob = popularity / popularity.sum()
    degrees = np.clip(
        rng.lognormal(np.log(config.mean_follows) - 0.5, 1.0, n).round().astype(int),
        1,
        n_authors - 1,
    )
    follow_u, follow_a, follow_aff = [], [], []
    for u in tqdm(range(n), desc="follow graph", disable=not progress, unit="user"):
        picks = rng.choice(n_authors, size=degrees[u], replace=False, p=prob)
        picks = picks[authors[picks] != user_ids[u]]
        follow_u.append(np.full(len(picks), u))
        follow_a.append(picks)
        follow_aff.append(rng.normal(0.0, 0.7, len(picks)))
    fu, fa, faff = np.concatenate(follow_u), np.concatenate(follow_a), np.concatenate(follow_aff)
    followees: list[list[int]] = [[] for _ in range(n)]
    affinity: dict[tuple[int, int], float] = {}
    for u, a, w in zip(fu.tolist(), fa.tolist(), faff.tolist(), strict=True):
        followees[u].append(a)
        affinity[(u, a)] = w
    follower_count = np.bincount(fa, minlength=n_authors)

    # Posts: Poisson per author-day, more from popular authors; topic mostly the author's own.
    rate = (
        config.posts_per_author_day * np.clip(popularity / np.median(popularity), 0.5, 3.0) ** 0.3
    )
    counts = rng.poisson(rate * config.days)
    post_author = np.repeat(np.arange(n_authors), counts)
    post_hour = rng.uniform(0, config.days * 24, len(post_author))
    order = np.argsort(post_hour, kind="stable")
    post_author, post_hour = post_author[order], post_hour[order]
    own = rng.random(len(post_author)) < 0.7
    post_topic = np.where(own, main_topic[post_author], rng.integers(0, config.topics, len(own)))
    is_video = rng.random(len(own)) < 0.2
    media_bytes = np.where(
        is_video,
        rng.lognormal(np.log(4e6), 0.6, len(own)),
        rng.lognormal(np.log(2.5e5), 0.5, len(own)),
    ).astype(np.int64)
    n_posts = len(post_author)
    post_ids = np.arange(1, n_posts + 1, dtype=np.int64)
    by_author: list[list[int]] = [[] for _ in range(n_authors)]  # post indices, time-ordered
    for i, a in enumerate(post_author.tolist()):
        by_author[a].append(i)
    author_hours = [[post_hour[i] for i in idx] for idx in by_author]

    # Sessions: daily seasonality (evening peak), activity varies per user.
    activity = rng.lognormal(-0.2, 0.6, n)
    hour_weight = 1.0 + 0.8 * np.sin((np.arange(24) - 14) / 24 * 2 * np.pi)
    hour_p = hour_weight / hour_weight.sum()
    rows: dict[str, list] = {
        k: []
        for k in (
            "request_id",
            "user",
            "post",
            "hour",
            "position",
            "p_like",
            "p_comment",
            "p_save",
        )
    }
    request = 0
    for u in tqdm(range(n), desc="sessions", disable=not progress, unit="user"):
        n_sessions = rng.poisson(config.sessions_per_user_day * activity[u] * config.days)
        if n_sessions == 0 or not followees[u]:
            continue
        day = rng.integers(0, config.days, n_sessions)
        hours = np.sort(day * 24 + rng.choice(24, n_sessions, p=hour_p) + rng.random(n_sessions))
        for h in hours.tolist():
            cands = []
            for a in followees[u]:
                hs = author_hours[a]
                lo = bisect.bisect_left(hs, h - config.candidate_window_h)
                hi = bisect.bisect_left(hs, h)
                cands.extend(by_author[a][lo:hi])
            if not cands:
                continue
            # Logging policy: a random subset of the timeline shown newest first.
            k = min(config.items_per_session, len(cands))
            shown = rng.choice(np.array(cands), size=k, replace=False)
            shown = shown[np.argsort(-post_hour[shown], kind="stable")]
            a_idx = post_author[shown]
            logit = truth.like_logit(
                config.base_logit,
                taste[u, post_topic[shown]],
                quality[a_idx],
                np.array([affinity[(u, int(a))] for a in a_idx]),
                h - post_hour[shown],
            )
            p = truth.probabilities(logit)
            request += 1
            rows["request_id"].extend([request] * k)
            rows["user"].extend([u] * k)
            rows["post"].extend(shown.tolist())
            rows["hour"].extend([h] * k)
            rows["position"].extend(range(k))
            for key in ("p_like", "p_comment", "p_save"):
                rows[key].extend(p[key].tolist())

    post_idx = np.array(rows["post"], dtype=np.int64)
    position = np.array(rows["position"])
    probs = {k: np.array(rows[k]) for k in ("p_like", "p_comment", "p_save")}
    seen = truth.examination(position)
    acted = {k: rng.random(len(position)) < seen * probs[f"p_{k}"] for k in C.ENGAGEMENT_KINDS}
    label = np.zeros(len(position), dtype=np.int64)
    for kind in C.ENGAGEMENT_KINDS:
        label = np.maximum(label, np.where(acted[kind], C.RELEVANCE[kind], 0))
    # Each item comes into view as the user scrolls, so no two impressions share a timestamp.
    imp_ts = _ts(config, np.array(rows["hour"]) + position * SCROLL_S / 3600.0)
    impressions = pd.DataFrame(
        {
            C.REQUEST_ID: np.array(rows["request_id"], dtype=np.int64),
            C.USER_ID: user_ids[np.array(rows["user"], dtype=np.int64)],
            C.POST_ID: post_ids[post_idx],
            C.AUTHOR_ID: authors[post_author[post_idx]],
            C.EVENT_TS: imp_ts,
            C.POSITION: position.astype(np.int64),
            **{kind: acted[kind] for kind in C.ENGAGEMENT_KINDS},
            C.LABEL: label,
            "oracle_p_like": probs["p_like"],
            "oracle_utility": truth.utility(probs),
        }
    )

    events = []
    for kind in C.ENGAGEMENT_KINDS:
        hit = impressions[impressions[kind]]
        events.append(
            pd.DataFrame(
                {
                    "event_id": [
                        f"sim-{r}-{p}-{kind}"
                        for r, p in zip(hit[C.REQUEST_ID], hit[C.POST_ID], strict=True)
                    ],
                    C.USER_ID: hit[C.USER_ID].to_numpy(),
                    C.POST_ID: hit[C.POST_ID].to_numpy(),
                    C.AUTHOR_ID: hit[C.AUTHOR_ID].to_numpy(),
                    "kind": kind,
                    # The action follows the impression by a few seconds.
                    C.EVENT_TS: hit[C.EVENT_TS] + timedelta(seconds=5),
                }
            )
        )
    interactions = pd.concat(events, ignore_index=True).sort_values([C.EVENT_TS, "event_id"])

    posts = pd.DataFrame(
        {
            C.POST_ID: post_ids,
            C.AUTHOR_ID: authors[post_author],
            "created_at": _ts(config, post_hour),
            "topic": post_topic.astype(np.int64),
            "media_kind": np.where(is_video, "video", "photo"),
            "media_bytes": media_bytes,
        }
    )
    following = np.bincount(fu, minlength=n)
    followers = np.zeros(n, dtype=np.int64)
    followers[authors - 1] = follower_count
    users = pd.DataFrame(
        {
            C.USER_ID: user_ids,
            "created_at": pd.to_datetime(config.start) - timedelta(days=30),
            "follower_count": followers,
            "following_count": following,
        }
    )
    follows = pd.DataFrame({C.USER_ID: user_ids[fu], "followee_id": authors[fa]})
    return World(config, users, posts, follows, impressions, interactions.reset_index(drop=True))
