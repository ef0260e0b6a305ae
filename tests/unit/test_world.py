from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from core import constants as C
from simulator.config import WorldConfig
from simulator.world import generate

END = datetime(2026, 1, 10, tzinfo=UTC)


@pytest.fixture(scope="module")
def world():
    return generate(WorldConfig(users=400, days=4, seed=3, end=END))


def test_same_seed_and_end_give_the_same_world(world):
    again = generate(WorldConfig(users=400, days=4, seed=3, end=END))
    for name in ("users", "posts", "follows", "impressions", "interactions"):
        pd.testing.assert_frame_equal(getattr(world, name), getattr(again, name))


def test_another_seed_gives_another_world(world):
    other = generate(WorldConfig(users=400, days=4, seed=4, end=END))
    assert not world.follows.equals(other.follows)


def test_follower_counts_are_heavy_tailed():
    big = generate(WorldConfig(users=2000, days=2, seed=3, end=END))
    followers = big.users.loc[big.users.follower_count > 0, "follower_count"]
    # A power law: the biggest account dwarfs the median one.
    assert followers.max() > 10 * followers.median()


def test_impressions_only_show_followed_authors_posts_published_before(world):
    imp = world.impressions.merge(world.posts[[C.POST_ID, "created_at"]], on=C.POST_ID)
    assert (imp["created_at"] <= imp[C.EVENT_TS]).all()
    edges = set(zip(world.follows[C.USER_ID], world.follows["followee_id"], strict=True))
    shown = set(zip(imp[C.USER_ID], imp[C.AUTHOR_ID], strict=True))
    assert shown <= edges


def test_impression_timestamps_are_unique_per_user(world):
    assert not world.impressions.duplicated([C.USER_ID, C.EVENT_TS]).any()


def test_labels_follow_the_hidden_engagement_model(world):
    imp = world.impressions
    hi = imp[imp.oracle_p_like > imp.oracle_p_like.quantile(0.8)][C.LIKE].mean()
    lo = imp[imp.oracle_p_like < imp.oracle_p_like.quantile(0.2)][C.LIKE].mean()
    assert hi > 3 * lo
    assert set(np.unique(imp[C.LABEL])) <= {0, 1, 2, 3}


def test_interactions_have_unique_event_ids(world):
    assert world.interactions["event_id"].is_unique
    assert len(world.interactions) == int(world.impressions[list(C.ENGAGEMENT_KINDS)].sum().sum())


def test_world_config_refuses_nonsense():
    with pytest.raises(ValueError, match="users"):
        WorldConfig(users=1)
    with pytest.raises(ValueError, match="extra"):
        WorldConfig(userz=100)
