"""Batch feature snapshots never look into the future of their own timestamp."""

from datetime import UTC, datetime

import pandas as pd
import pytest

from core import constants as C
from features import batch
from simulator.config import WorldConfig
from simulator.world import generate


@pytest.fixture(scope="module")
def world():
    return generate(WorldConfig(users=300, days=3, seed=5, end=datetime(2026, 3, 1, tzinfo=UTC)))


def test_snapshots_start_at_the_beginning_and_end_at_the_end():
    start, end = pd.Timestamp("2026-01-01", tz="UTC"), pd.Timestamp("2026-01-02 03:00", tz="UTC")
    times = batch.snapshot_times(start, end)
    assert times[0] == start and times[-1] == end
    assert (times[1:] - times[:-1] <= pd.Timedelta(hours=batch.SNAPSHOT_EVERY_H)).all()


def test_an_impression_after_the_snapshot_never_reaches_it(world):
    imp = world.impressions.copy()
    t = pd.Timestamp(world.config.end) - pd.Timedelta(days=1)
    times = pd.DatetimeIndex([t])
    before = batch.post_stats(imp, world.posts, times)
    # Plant a burst of likes one millisecond after the snapshot on a live post.
    live = world.posts[world.posts["created_at"] < t][C.POST_ID].iloc[0]
    planted = imp.head(50).assign(
        **{C.POST_ID: live, C.EVENT_TS: t + pd.Timedelta(milliseconds=1), C.LIKE: True}
    )
    after = batch.post_stats(pd.concat([imp, planted]), world.posts, times)
    pd.testing.assert_frame_equal(before, after)
    # ...while the same burst one millisecond before the snapshot does change it.
    early = planted.assign(**{C.EVENT_TS: t - pd.Timedelta(milliseconds=1)})
    changed = batch.post_stats(pd.concat([imp, early]), world.posts, times)
    row = changed[(changed[C.POST_ID] == live) & (changed[C.EVENT_TS] == t)].iloc[0]
    old = before[(before[C.POST_ID] == live) & (before[C.EVENT_TS] == t)].iloc[0]
    assert row["post_likes"] == old["post_likes"] + 50


def test_every_post_has_a_row_from_its_birth(world):
    times = batch.snapshot_times(pd.Timestamp(world.config.start), pd.Timestamp(world.config.end))
    stats = batch.post_stats(world.impressions, world.posts, times)
    first = stats.groupby(C.POST_ID)[C.EVENT_TS].min()
    created = world.posts.set_index(C.POST_ID)["created_at"]
    assert (first.reindex(created.index) <= created).all()


def test_user_rates_are_smoothed_towards_the_prior(world):
    times = pd.DatetimeIndex([pd.Timestamp(world.config.end)])
    stats = batch.user_stats(world.impressions, world.follows, times)
    unseen = stats[stats.user_impressions_7d == 0]
    assert len(unseen) > 0
    assert unseen.user_like_rate_7d.tolist() == pytest.approx([batch.PRIOR_RATE] * len(unseen))
    assert stats.user_like_rate_7d.between(0, 1).all()
