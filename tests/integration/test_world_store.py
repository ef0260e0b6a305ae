"""The world lands in Cassandra and Feast as generated."""

import pandas as pd
import pytest

from core import constants as C
from core.db import connect
from pipelines.steps import WorldExistsError, generate_world
from simulator.config import WorldConfig
from simulator.writer import timeline_rows

pytestmark = pytest.mark.integration


@pytest.fixture()
def session(settings):
    cluster, session = connect(settings)
    yield session
    cluster.shutdown()


def test_every_user_and_post_is_in_cassandra(world, session):
    users = session.execute("SELECT COUNT(*) FROM users_by_id").one()[0]
    assert users == len(world.users)
    # Uploads through the API (other tests) may add posts; the world's own must all be there.
    stored = {r.post_id for r in session.execute("SELECT post_id FROM posts_by_id")}
    assert set(world.posts[C.POST_ID].tolist()) <= stored


def test_timelines_fan_out_small_authors_and_leave_big_ones_to_pull(world, session, settings):
    """Each follower's recent timeline (feed_by_user) holds the posts of the small authors they
    follow from the last timeline_days, and nothing older (each row's TTL is what was left of
    the window when it was written)."""
    expected = timeline_rows(world, settings.pull_follower_threshold)
    user = int(expected[C.USER_ID].value_counts().index[0])
    mine = expected[expected[C.USER_ID] == user]
    rows = list(
        session.execute(
            "SELECT post_id, author_id, created_ms, TTL(author_id) AS ttl FROM feed_by_user "
            "WHERE user_id=%s",
            (user,),
        )
    )
    world_posts = set(world.posts[C.POST_ID].tolist())  # API uploads of other tests aside
    rows = [r for r in rows if r.post_id in world_posts]
    now = pd.Timestamp.now(tz="UTC")
    window = pd.Timedelta(days=settings.timeline_days)
    # Clear of the window's edge by an hour either way: a row at the edge may expire meanwhile.
    inside = set(mine.loc[mine["created_at"] > now - window + pd.Timedelta(hours=1), C.POST_ID])
    ever = set(mine.loc[mine["created_at"] > now - window - pd.Timedelta(hours=1), C.POST_ID])
    got = {r.post_id for r in rows}
    assert inside and inside <= got <= ever
    followers = world.users.set_index(C.USER_ID)["follower_count"]
    assert all(followers[r.author_id] <= settings.pull_follower_threshold for r in rows)
    for r in rows:  # expires when the post leaves the window, not later
        age_s = (now - pd.Timestamp(r.created_ms, unit="ms", tz="UTC")).total_seconds()
        assert 0 < r.ttl <= window.total_seconds() - age_s + 60


def test_a_second_world_is_refused_and_the_first_is_kept(world, session, settings):
    before = session.execute("SELECT COUNT(*) FROM users_by_id").one()[0]
    with pytest.raises(WorldExistsError, match="--replace"):
        generate_world(settings, WorldConfig(users=50, days=2, seed=1, end=world.config.end))
    assert session.execute("SELECT COUNT(*) FROM users_by_id").one()[0] == before
    assert len(pd.read_parquet(settings.world_dir / "users.parquet")) == len(world.users)


def test_online_features_equal_the_latest_snapshot(trained, settings, world):
    from features.store import online_features, open_store, tables_dir

    posts = world.posts.tail(5)
    got = online_features(
        open_store(settings),
        int(world.users[C.USER_ID].iloc[0]),
        posts[C.POST_ID].tolist(),
        posts[C.AUTHOR_ID].tolist(),
        posts["topic"].tolist(),
        pd.Timestamp.now(tz="UTC").timestamp(),
    )
    assert (got["post_age_h"] > 0).all()  # the on-demand view ran
    table = pd.read_parquet(tables_dir(settings) / "post_stats.parquet")
    latest = table.sort_values(C.EVENT_TS).groupby(C.POST_ID).tail(1).set_index(C.POST_ID)
    for _, row in got.iterrows():
        assert row["post_likes"] == latest.loc[row[C.POST_ID], "post_likes"]
        assert row["post_like_rate"] == pytest.approx(latest.loc[row[C.POST_ID], "post_like_rate"])


def test_training_rows_see_only_the_past(trained, settings):
    from features.store import tables_dir
    from training.dataset import training_frame

    imp = pd.read_parquet(settings.world_dir / "impressions.parquet").sample(200, random_state=0)
    frame = training_frame(settings, imp)
    assert len(frame) == len(imp)
    table = pd.read_parquet(tables_dir(settings) / "user_stats.parquet")
    for _, row in frame.head(40).iterrows():
        snaps = table[(table[C.USER_ID] == row[C.USER_ID]) & (table[C.EVENT_TS] <= row[C.EVENT_TS])]
        assert (
            row["user_impressions_7d"]
            == snaps.sort_values(C.EVENT_TS).iloc[-1]["user_impressions_7d"]
        )


def test_planted_future_interaction_never_reaches_a_training_row(trained, settings, world):
    """Plant likes one millisecond after an impression: its training row must not see them."""
    from features.store import apply, tables_dir
    from training.dataset import training_frame

    imp = pd.read_parquet(settings.world_dir / "impressions.parquet")
    row = imp[imp[C.EVENT_TS] > imp[C.EVENT_TS].max() - pd.Timedelta(days=1)].iloc[[0]]
    before = training_frame(settings, row)
    planted = pd.concat([row] * 30).assign(
        **{
            C.EVENT_TS: row[C.EVENT_TS].iloc[0] + pd.Timedelta(milliseconds=1),
            C.LIKE: True,
            C.REQUEST_ID: -1,
            C.POSITION: range(30),
        }
    )
    backup = settings.world_dir / "impressions.backup.parquet"
    (settings.world_dir / "impressions.parquet").rename(backup)
    try:
        pd.concat([imp, planted]).to_parquet(settings.world_dir / "impressions.parquet")
        apply(settings)
        after = training_frame(settings, row)
        table = pd.read_parquet(tables_dir(settings) / "post_stats.parquet")
    finally:
        backup.replace(settings.world_dir / "impressions.parquet")
        apply(settings)
    cols = [c for c in before.columns if c.startswith(("post_", "user_", "author_"))]
    pd.testing.assert_frame_equal(before[cols], after[cols])
    # ...and the planted likes did land in the feature table, at a later row.
    post = int(row[C.POST_ID].iloc[0])
    assert table.loc[table[C.POST_ID] == post, "post_likes"].max() >= 30


def test_pandas_point_in_time_join_equals_feasts(trained, settings):
    import numpy as np

    from training.dataset import MODEL_FEATURES, point_in_time

    rows = pd.read_parquet(settings.world_dir / "impressions.parquet").sample(400, random_state=3)
    ours = point_in_time(settings, rows)
    feast = point_in_time(settings, rows, engine="feast")
    cols = list(MODEL_FEATURES)
    np.testing.assert_allclose(ours[cols].to_numpy(), feast[cols].to_numpy(), equal_nan=True)
