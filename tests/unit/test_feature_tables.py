"""Batch feature rows never look into the future of their own timestamp."""

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from core import constants as C
from features import batch
from simulator.config import WorldConfig
from simulator.world import generate


@pytest.fixture(scope="module")
def world():
    return generate(WorldConfig(users=300, days=3, seed=5, end=datetime(2026, 3, 1, tzinfo=UTC)))


@pytest.fixture(scope="module")
def imp(world):
    topics = world.posts[[C.POST_ID, "topic"]].rename(columns={"topic": C.TOPIC})
    return world.impressions.merge(topics, on=C.POST_ID)


def _hours(world):
    start = pd.Timestamp(world.config.start)
    return start, world.config.days * 24


def _row(table, key, value, ts):
    return table[(table[key] == value) & (table[C.EVENT_TS] == ts)].iloc[0]


def test_likes_after_a_row_time_never_reach_that_row(world, imp):
    start, n_hours = _hours(world)
    t = start + pd.Timedelta(hours=40)
    live = world.posts[world.posts["created_at"] < t - pd.Timedelta(hours=2)][C.POST_ID].iloc[0]
    burst = imp.head(50).assign(**{C.POST_ID: live, C.LIKE: True})
    posts = world.posts.sort_values(C.POST_ID)
    base = batch.post_stats(imp, posts, start, n_hours)
    after = batch.post_stats(
        pd.concat([imp, burst.assign(**{C.EVENT_TS: t + pd.Timedelta(milliseconds=1)})]),
        posts,
        start,
        n_hours,
    )
    before = batch.post_stats(
        pd.concat([imp, burst.assign(**{C.EVENT_TS: t - pd.Timedelta(milliseconds=1)})]),
        posts,
        start,
        n_hours,
    )
    assert (
        _row(after, C.POST_ID, live, t)["post_likes"]
        == _row(base, C.POST_ID, live, t)["post_likes"]
    )
    assert (
        _row(before, C.POST_ID, live, t)["post_likes"]
        == _row(base, C.POST_ID, live, t)["post_likes"] + 50
    )
    assert _row(before, C.POST_ID, live, t)["post_likes_1h"] >= 50


def test_windowed_user_counts_forget_what_left_the_window(world, imp):
    start, n_hours = _hours(world)
    users = world.users[C.USER_ID].to_numpy()
    stats = batch.user_stats(imp, world.follows, users, start, n_hours)
    u = int(imp[C.USER_ID].value_counts().index[0])
    mine = stats[stats[C.USER_ID] == u].set_index(C.EVENT_TS)
    ts = imp.loc[imp[C.USER_ID] == u, C.EVENT_TS]
    for t in mine.index[::7]:
        assert (
            mine.loc[t, "user_impressions_1h"]
            == ((ts < t) & (ts >= t - pd.Timedelta(hours=1))).sum()
        )
        assert (
            mine.loc[t, "user_impressions_1d"]
            == ((ts < t) & (ts >= t - pd.Timedelta(days=1))).sum()
        )


def test_pair_rows_are_stamped_after_the_activity_they_count(world, imp):
    start, _ = _hours(world)
    pairs = batch._pair_stats(imp, C.AUTHOR_ID, start, "user_author")
    merged = pairs.merge(imp, on=[C.USER_ID, C.AUTHOR_ID], suffixes=("", "_imp"))
    counted = merged[merged[f"{C.EVENT_TS}_imp"] < merged[C.EVENT_TS]]
    got = counted.groupby([C.USER_ID, C.AUTHOR_ID, C.EVENT_TS]).size()
    want = pairs.set_index([C.USER_ID, C.AUTHOR_ID, C.EVENT_TS])["user_author_impressions"]
    np.testing.assert_array_equal(got.reindex(want.index).to_numpy(), want.to_numpy())


def test_every_post_has_a_row_from_its_birth(world, imp):
    start, n_hours = _hours(world)
    stats = batch.post_stats(imp, world.posts.sort_values(C.POST_ID), start, n_hours)
    first = stats.groupby(C.POST_ID)[C.EVENT_TS].min()
    created = world.posts.set_index(C.POST_ID)["created_at"]
    assert (first.reindex(created.index) <= created).all()


def test_rates_of_users_with_no_history_are_the_prior(world, imp):
    start, n_hours = _hours(world)
    stats = batch.user_stats(imp, world.follows, world.users[C.USER_ID].to_numpy(), start, n_hours)
    unseen = stats[stats.user_impressions_7d == 0]
    assert len(unseen) > 0
    assert unseen.user_like_rate_7d.tolist() == pytest.approx([batch.PRIOR_RATE] * len(unseen))
    assert stats.user_like_rate_7d.between(0, 1).all()
