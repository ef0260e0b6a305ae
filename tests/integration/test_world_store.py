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
    posts = session.execute("SELECT COUNT(*) FROM posts_by_id").one()[0]
    assert (users, posts) == (len(world.users), len(world.posts))


def test_timelines_fan_out_small_authors_and_leave_big_ones_to_pull(world, session, settings):
    expected = timeline_rows(world, settings.pull_follower_threshold)
    user = int(expected[C.USER_ID].value_counts().index[0])
    rows = []
    for day in expected.loc[expected[C.USER_ID] == user, "day"].unique():
        rows += list(
            session.execute(
                "SELECT post_id, author_id FROM timeline_by_user WHERE user_id=%s AND day=%s",
                (user, int(day)),
            )
        )
    assert {r.post_id for r in rows} == set(expected.loc[expected[C.USER_ID] == user, C.POST_ID])
    followers = world.users.set_index(C.USER_ID)["follower_count"]
    assert all(followers[r.author_id] <= settings.pull_follower_threshold for r in rows)


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
    )
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
