from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from core import constants as C
from simulator.config import WorldConfig
from simulator.world import ACTION_DELAY_S, SCROLL_S, generate

END = datetime(2026, 1, 10, tzinfo=UTC)


@pytest.fixture(scope="module")
def world():
    return generate(WorldConfig(users=400, days=4, seed=3, end=END))


def test_same_seed_and_end_give_the_same_world(world):
    again = generate(WorldConfig(users=400, days=4, seed=3, end=END))
    for name in ("users", "posts", "follows", "requests", "candidates", "impressions"):
        pd.testing.assert_frame_equal(getattr(world, name), getattr(again, name))


def test_another_seed_gives_another_world(world):
    other = generate(WorldConfig(users=400, days=4, seed=4, end=END))
    assert not world.follows.equals(other.follows)


def test_follower_counts_are_heavy_tailed():
    big = generate(WorldConfig(users=2000, days=2, seed=3, end=END))
    followers = big.users.loc[big.users.follower_count > 0, "follower_count"]
    # A power law: the biggest account dwarfs the median one.
    assert followers.max() > 10 * followers.median()


def test_impressions_show_posts_published_before_mostly_from_followed_authors(world):
    imp = world.impressions.merge(world.posts[[C.POST_ID, "created_at"]], on=C.POST_ID)
    assert (imp["created_at"] <= imp[C.EVENT_TS]).all()
    edges = set(zip(world.follows[C.USER_ID], world.follows["followee_id"], strict=True))
    followed = [(u, a) in edges for u, a in zip(imp[C.USER_ID], imp[C.AUTHOR_ID], strict=True)]
    assert np.array_equal(followed, imp["in_network"].to_numpy())
    assert 0.5 < np.mean(followed) < 1.0  # out-of-network explore candidates exist


def test_logged_propensities_match_the_logging_policy(world):
    imp = world.impressions.merge(world.requests[[C.REQUEST_ID, "explored", "candidates"]])
    greedy = imp[~imp["explored"]]
    # A greedy page shows the newest first, so each item had at least 1 - explore_share.
    assert (greedy["propensity"] >= 1 - world.config.explore_share).all()
    explored = imp[imp["explored"]]
    assert (explored["propensity"] >= world.config.explore_share / explored["candidates"]).all()
    assert (imp["propensity"] > 0).all() and (imp["propensity"] <= 1).all()
    # Being on the page at all is at least as likely as being at one given slot.
    assert (imp["shown_propensity"] >= imp["propensity"] - 1e-12).all()
    assert (imp["shown_propensity"] <= 1).all()


def test_impression_timestamps_are_unique_per_user(world):
    assert not world.impressions.duplicated([C.USER_ID, C.EVENT_TS]).any()


def test_labels_follow_the_hidden_engagement_model(world):
    imp = world.impressions
    p = world.truth.score(imp)["p_like"]
    hi = imp[p > np.quantile(p, 0.8)][C.LIKE].mean()
    lo = imp[p < np.quantile(p, 0.2)][C.LIKE].mean()
    assert hi > 3 * lo
    assert set(np.unique(imp[C.LABEL])) <= {0, 1, 2, 3}


def test_position_bias_lowers_engagement_further_down_the_page(world):
    by_pos = world.impressions.groupby(C.POSITION)[C.LIKE].mean()
    assert by_pos.iloc[0] > 1.5 * by_pos.iloc[8]


def test_truth_round_trips_through_its_file(world, tmp_path):
    from simulator.truth import Truth

    world.truth.save(tmp_path / "t.npz")
    again = Truth.load(tmp_path / "t.npz").score(world.impressions.head(100))
    for head, values in world.truth.score(world.impressions.head(100)).items():
        np.testing.assert_allclose(again[head], values)


def test_no_log_row_lies_past_the_worlds_end():
    # This seed and end have a session scrolling at the end: before the cut, 11 of its
    # impressions and a like lay after it, and a lake cut at the end kept them out.
    end = datetime(2026, 12, 1, 16, tzinfo=UTC)
    w = generate(WorldConfig(users=150, days=4, seed=7, end=end))
    last = w.impressions[C.EVENT_TS].max()
    assert last > pd.Timestamp(end) - pd.Timedelta(seconds=SCROLL_S + ACTION_DELAY_S)
    for name in ("requests", "impressions", "interactions"):
        assert (getattr(w, name)[C.EVENT_TS] <= pd.Timestamp(end)).all(), name
    # Each action still follows a kept impression of its post.
    pair = w.interactions.merge(
        w.impressions[[C.USER_ID, C.POST_ID, C.EVENT_TS]],
        on=[C.USER_ID, C.POST_ID],
        suffixes=("", "_shown"),
    )
    delay = pair[C.EVENT_TS] - pair[f"{C.EVENT_TS}_shown"]
    follows = (delay == pd.Timedelta(seconds=ACTION_DELAY_S)).groupby(pair["event_id"]).any()
    assert set(follows[follows].index) == set(w.interactions["event_id"])


def test_interactions_have_unique_event_ids(world):
    assert world.interactions["event_id"].is_unique
    assert len(world.interactions) == int(world.impressions[list(C.ENGAGEMENT_KINDS)].sum().sum())


def test_world_stats_report_a_heavy_tail_and_a_zipf_like_trace():
    from simulator.stats import world_stats

    big = generate(WorldConfig(users=2000, days=3, seed=3, end=END))
    stats = world_stats(big.users, big.impressions)
    assert 1.5 < stats["follower_exponent"] < 4.0
    assert 0.5 < stats["request_zipf_exponent"] < 1.5
    assert 0.0 <= stats["hourly_top10_churn"] <= 1.0


def test_world_config_refuses_nonsense():
    with pytest.raises(ValueError, match="users"):
        WorldConfig(users=1)
    with pytest.raises(ValueError, match="extra"):
        WorldConfig(userz=100)
