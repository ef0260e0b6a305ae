"""Generate a world: follow graph, authors, posts, media, sessions and engagement.

Pure and deterministic: the same :class:`WorldConfig` gives the same frames. The logging policy
that chose each page is recorded with every impression's propensity, so that off-policy
estimators can be checked against the truth.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm import tqdm

from core import constants as C
from simulator.config import WorldConfig
from simulator.truth import Truth, examination

AFFINITY_RANK = 4
SCROLL_S = 2.0  # seconds between two items of a session coming into view
ACTION_DELAY_S = 1.0  # seconds from an item coming into view to a like, comment or save of it
WEEKDAY_LIFT = np.array([0.0, -0.2, -0.2, 0.0, 0.3, 1.0, 0.9])  # Mon..Sun, scaled by amplitude


@dataclass(frozen=True)
class World:
    config: WorldConfig
    users: pd.DataFrame  # user_id, created_at, follower_count, following_count
    posts: pd.DataFrame  # post_id, author_id, created_at, topic, media_kind, media_bytes
    follows: pd.DataFrame  # user_id, followee_id
    requests: pd.DataFrame  # request_id, user_id, event_timestamp, candidates, explored
    candidates: pd.DataFrame  # request_id, post_id, chrono_rank, in_network
    impressions: pd.DataFrame  # one row per shown item: labels, dwell, propensity, oracle
    interactions: pd.DataFrame  # event_id, user_id, post_id, author_id, kind, event_timestamp
    truth: Truth


def _ts(config: WorldConfig, hours: np.ndarray) -> pd.DatetimeIndex:
    """Timestamps at millisecond precision (what Cassandra stores)."""
    return (pd.to_datetime(config.start) + pd.to_timedelta(hours, unit="h")).floor("ms")


def session_hours(config: WorldConfig, rng: np.random.Generator, n: int) -> np.ndarray:
    """Session start hours with a daily (evening peak) and a weekly (weekend) cycle."""
    start = pd.Timestamp(config.start)
    hours = np.arange(config.days * 24)
    hod = (start.hour + hours) % 24
    dow = ((start.dayofweek * 24 + start.hour + hours) // 24) % 7
    rate = (1.0 + config.daily_amplitude * np.sin((hod - 14) / 24 * 2 * np.pi)) * (
        1.0 + config.weekly_amplitude * WEEKDAY_LIFT[dow]
    )
    picks = rng.choice(len(hours), size=n, p=rate / rate.sum())
    return np.sort(picks + rng.random(n))


def one_at_a_time(starts: np.ndarray, length_h: float) -> np.ndarray:
    """Sorted session ``starts`` less those inside the session before: a user scrolls one feed
    at a time, and opening the app mid-session continues that session. Overlapping sessions
    would show a post twice within a second of its like, and no log could tell which showing
    the like belonged to."""
    kept: list[float] = []
    for t in starts.tolist():
        if not kept or t >= kept[-1] + length_h:
            kept.append(t)
    return np.array(kept, dtype=np.float64)


@dataclass(frozen=True)
class Structure:
    """Who follows whom and what gets posted: the part of a world that sessions run over."""

    n: int
    user_ids: np.ndarray
    authors: np.ndarray  # user id of each author index
    follower_count: np.ndarray  # per author index
    followees: list[set[int]]  # per user index: author indices
    fu: np.ndarray  # follow edges: user index
    fa: np.ndarray  # follow edges: author index
    post_ids: np.ndarray
    post_author: np.ndarray  # author index per post (posts sorted by hour)
    post_hour: np.ndarray
    post_topic: np.ndarray
    is_video: np.ndarray
    media_bytes: np.ndarray
    by_author: list[list[int]]
    author_hours: list[list[float]]
    big_posts: np.ndarray  # posts of the explore pool's authors, by hour
    truth: Truth


def structure(config: WorldConfig, rng: np.random.Generator, progress: bool = False) -> Structure:
    """Authors, follow graph, posts and the hidden truth; consumes ``rng`` in a fixed order."""
    n = config.users
    user_ids = np.arange(1, n + 1, dtype=np.int64)

    # Authors: Pareto popularity (a few very large accounts), hidden quality, a main topic.
    n_authors = max(2, round(config.author_share * n))
    authors = np.sort(rng.choice(user_ids, size=n_authors, replace=False))
    popularity = 1.0 + rng.pareto(config.popularity_shape, n_authors)
    quality = rng.normal(0.0, 1.0, n_authors)
    main_topic = rng.integers(0, config.topics, n_authors)
    taste = rng.dirichlet(np.full(config.topics, config.taste_concentration), n)

    # Follow graph: preferential by popularity, lognormal out-degree.
    prob = popularity / popularity.sum()
    degrees = np.clip(
        rng.lognormal(np.log(config.mean_follows) - 0.5, 1.0, n).round().astype(int),
        1,
        n_authors - 1,
    )
    fu_l, fa_l = [], []
    for u in tqdm(range(n), desc="follow graph", disable=not progress, unit="user"):
        picks = rng.choice(n_authors, size=degrees[u], replace=False, p=prob)
        picks = picks[authors[picks] != user_ids[u]]
        fu_l.append(np.full(len(picks), u))
        fa_l.append(picks)
    fu, fa = np.concatenate(fu_l), np.concatenate(fa_l)
    # Affinity mostly comes from shared circles (low-rank: user and author vectors meet), the rest
    # is idiosyncratic to the pair.
    circle_u = rng.normal(0.0, 1.0, (n, AFFINITY_RANK))
    circle_a = rng.normal(0.0, 1.0, (n_authors, AFFINITY_RANK))
    shared = (circle_u[fu] * circle_a[fa]).sum(axis=1) / np.sqrt(AFFINITY_RANK)
    faff = config.affinity_structure * shared + (1 - config.affinity_structure) * rng.normal(
        0.0, 1.0, len(fu)
    )
    faff *= 0.7
    followees: list[set[int]] = [set() for _ in range(n)]
    for u, a in zip(fu.tolist(), fa.tolist(), strict=True):
        followees[u].add(a)
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
    n_posts = len(post_author)
    own = rng.random(n_posts) < 0.7
    post_topic = np.where(own, main_topic[post_author], rng.integers(0, config.topics, n_posts))
    post_quality = quality[post_author] + rng.normal(0.0, 0.4, n_posts)
    is_video = rng.random(n_posts) < config.video_share
    media_bytes = np.where(
        is_video,
        rng.lognormal(np.log(4e6), 0.6, n_posts),
        rng.lognormal(np.log(2.5e5), 0.5, n_posts),
    ).astype(np.int64)
    post_ids = np.arange(1, n_posts + 1, dtype=np.int64)
    by_author: list[list[int]] = [[] for _ in range(n_authors)]
    for i, a in enumerate(post_author.tolist()):
        by_author[a].append(i)
    author_hours = [[post_hour[i] for i in idx] for idx in by_author]
    big = np.argsort(-follower_count)[: max(5, n_authors // 20)]  # the explore pool's authors
    big_posts = np.sort(np.concatenate([np.array(by_author[a], dtype=np.int64) for a in big]))

    truth = Truth(
        user_ids=user_ids,
        taste=taste,
        author_ids=authors,
        post_ids=post_ids,
        post_author=post_author,
        post_topic=post_topic,
        post_quality=post_quality,
        post_hour=post_hour,
        post_video=is_video,
        follow_user=fu,
        follow_author=fa,
        follow_affinity=faff,
        params=np.array(
            [
                config.base_logit,
                config.taste_weight,
                config.quality_weight,
                config.affinity_weight,
                config.in_network_bonus,
                config.recency_per_h,
                config.position_bias,
                config.base_dwell_s,
                pd.Timestamp(config.start).timestamp(),
            ]
        ),
    )

    return Structure(
        n=n,
        user_ids=user_ids,
        authors=authors,
        follower_count=follower_count,
        followees=followees,
        fu=fu,
        fa=fa,
        post_ids=post_ids,
        post_author=post_author,
        post_hour=post_hour,
        post_topic=post_topic,
        is_video=is_video,
        media_bytes=media_bytes,
        by_author=by_author,
        author_hours=author_hours,
        big_posts=big_posts,
        truth=truth,
    )


def generate(config: WorldConfig, progress: bool = False) -> World:
    rng = np.random.default_rng(config.seed)
    st = structure(config, rng, progress)
    n, user_ids, authors, truth = st.n, st.user_ids, st.authors, st.truth
    followees, fu, fa, follower_count = st.followees, st.fu, st.fa, st.follower_count
    post_ids, post_author, post_hour = st.post_ids, st.post_author, st.post_hour
    post_topic, is_video, media_bytes = st.post_topic, st.is_video, st.media_bytes
    by_author, author_hours, big_posts = st.by_author, st.author_hours, st.big_posts

    # Sessions: each request gathers the timeline (+ a few out-of-network posts), the logging
    # policy picks and orders a page, and the user acts on what they examine.
    activity = rng.lognormal(-0.2, 0.6, n)
    n_sessions = rng.poisson(config.sessions_per_user_day * activity * config.days)
    req_user: list[int] = []
    req_hour: list[float] = []
    req_explored: list[bool] = []
    req_n: list[int] = []
    cand_req: list[int] = []
    cand_post: list[int] = []
    cand_rank: list[int] = []
    imp: dict[str, list] = {
        k: []
        for k in ("request", "user", "post", "hour", "position", "propensity", "shown_propensity")
    }
    request = 0
    session_h = config.items_per_session * SCROLL_S / 3600.0
    for u in tqdm(range(n), desc="sessions", disable=not progress, unit="user"):
        if n_sessions[u] == 0 or not followees[u]:
            continue
        starts = session_hours(config, rng, int(n_sessions[u]))
        for h in one_at_a_time(starts, session_h).tolist():
            cands: list[int] = []
            for a in followees[u]:
                hs = author_hours[a]
                lo = bisect.bisect_left(hs, h - config.candidate_window_h)
                cands.extend(by_author[a][lo : bisect.bisect_left(hs, h)])
            if not cands:
                continue
            lo = np.searchsorted(post_hour[big_posts], h - config.candidate_window_h)
            hi = np.searchsorted(post_hour[big_posts], h)
            pool = [int(p) for p in big_posts[lo:hi] if post_author[p] not in followees[u]]
            if pool and config.explore_per_request:
                k_exp = min(config.explore_per_request, len(pool))
                cands.extend(rng.choice(pool, size=k_exp, replace=False).tolist())
            c = np.array(cands, dtype=np.int64)
            chrono = c[np.argsort(-post_hour[c], kind="stable")]
            m, k = len(chrono), min(config.items_per_session, len(chrono))
            explored = rng.random() < config.explore_share
            shown = rng.choice(chrono, size=k, replace=False) if explored else chrono[:k]
            # P(post at slot) under the logging policy: greedy chrono, or uniform (explore).
            greedy = (shown == chrono[:k]).astype(np.float64)
            propensity = (1 - config.explore_share) * greedy + config.explore_share / m
            # P(post on the page at all): in the greedy page, or drawn into the random one.
            on_greedy = np.isin(shown, chrono[:k]).astype(np.float64)
            shown_prop = (1 - config.explore_share) * on_greedy + config.explore_share * k / m
            request += 1
            req_user.append(u)
            req_hour.append(h)
            req_explored.append(explored)
            req_n.append(m)
            cand_req.extend([request] * m)
            cand_post.extend(chrono.tolist())
            cand_rank.extend(range(m))
            imp["request"].extend([request] * k)
            imp["user"].extend([u] * k)
            imp["post"].extend(shown.tolist())
            imp["hour"].extend([h + pos * SCROLL_S / 3600.0 for pos in range(k)])
            imp["position"].extend(range(k))
            imp["propensity"].extend(propensity.tolist())
            imp["shown_propensity"].extend(shown_prop.tolist())

    iu = np.array(imp["user"], dtype=np.int64)
    ip = np.array(imp["post"], dtype=np.int64)
    ihour = np.array(imp["hour"])
    position = np.array(imp["position"], dtype=np.int64)
    heads = truth.heads(iu, ip, ihour)
    seen = rng.random(len(position)) < examination(position, config.position_bias)
    acted = {
        kind: seen & (rng.random(len(position)) < heads[f"p_{kind}"]) for kind in C.ENGAGEMENT_KINDS
    }
    dwell = np.where(
        seen, rng.exponential(heads["e_dwell"]), rng.exponential(0.3, len(position))
    ).round(3)
    label = np.zeros(len(position), dtype=np.int64)
    for kind in C.ENGAGEMENT_KINDS:
        label = np.maximum(label, np.where(acted[kind], C.RELEVANCE[kind], 0))
    impressions = pd.DataFrame(
        {
            C.REQUEST_ID: np.array(imp["request"], dtype=np.int64),
            C.USER_ID: user_ids[iu],
            C.POST_ID: post_ids[ip],
            C.AUTHOR_ID: authors[post_author[ip]],
            C.EVENT_TS: _ts(config, ihour),
            C.POSITION: position,
            **{kind: acted[kind] for kind in C.ENGAGEMENT_KINDS},
            "dwell_s": dwell,
            C.LABEL: label,
            "propensity": np.array(imp["propensity"]),
            "shown_propensity": np.array(imp["shown_propensity"]),
            "in_network": np.array(
                [
                    a in followees[u]
                    for u, a in zip(iu.tolist(), post_author[ip].tolist(), strict=True)
                ]
            ),
        }
    )

    # The world ends at ``config.end``: a session still scrolling then stops there. An
    # impression is kept only if its actions (ACTION_DELAY later) fall inside the world too, so
    # no log row lies past the end and a lake cut at it holds each kept impression's labels.
    # Filtering after every draw keeps the rest of the world as the seed made it.
    inside = (
        impressions[C.EVENT_TS] + pd.Timedelta(seconds=ACTION_DELAY_S) <= pd.Timestamp(config.end)
    ).to_numpy()
    impressions = impressions[inside].reset_index(drop=True)

    req_ts = _ts(config, np.array(req_hour))
    requests = pd.DataFrame(
        {
            C.REQUEST_ID: np.arange(1, request + 1, dtype=np.int64),
            C.USER_ID: user_ids[np.array(req_user, dtype=np.int64)],
            C.EVENT_TS: req_ts,
            "candidates": np.array(req_n, dtype=np.int64),
            "explored": np.array(req_explored),
        }
    )
    cpost = np.array(cand_post, dtype=np.int64)
    candidates = pd.DataFrame(
        {
            C.REQUEST_ID: np.array(cand_req, dtype=np.int64),
            C.POST_ID: post_ids[cpost],
            C.AUTHOR_ID: authors[post_author[cpost]],
            "chrono_rank": np.array(cand_rank, np.int64),
        }
    )
    cand_user = np.repeat(np.array(req_user, dtype=np.int64), req_n)
    candidates["in_network"] = [
        a in followees[u]
        for u, a in zip(cand_user.tolist(), post_author[cpost].tolist(), strict=True)
    ]

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
                    # The action follows the impression.
                    C.EVENT_TS: hit[C.EVENT_TS] + pd.Timedelta(seconds=ACTION_DELAY_S),
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
            "created_at": pd.to_datetime(config.start) - pd.Timedelta(days=30),
            "follower_count": followers,
            "following_count": following,
        }
    )
    follows = pd.DataFrame({C.USER_ID: user_ids[fu], "followee_id": authors[fa]})
    return World(
        config,
        users,
        posts,
        follows,
        requests,
        candidates,
        impressions,
        interactions.reset_index(drop=True),
        truth,
    )
