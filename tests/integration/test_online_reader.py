"""The fast online reader returns exactly what Feast's get_online_features returns (real Redis)."""

import socket
import time

import numpy as np
import pandas as pd
import pytest
import redis

from core import constants as C
from features.store import FEATURE_COLUMNS, online_features, open_store

pytestmark = pytest.mark.integration

UNKNOWN = 987_654_321  # no user, post, author or topic has this id


@pytest.fixture(scope="module")
def store(settings, world):
    """The session's Feast store, applied and materialized (no models needed here)."""
    from pipelines.steps import features_apply, features_materialize

    if not (settings.feast_dir / "registry.db").exists():  # else `trained` already did both
        features_apply(settings)
        features_materialize(settings)
    return open_store(settings)


@pytest.fixture(scope="module")
def reader(settings, store):
    from features.online import OnlineReader

    r = OnlineReader(settings, store)
    yield r
    r.close()


def _users(world) -> list[int]:
    """The three users with the most impressions (their pair features exist) and an unknown."""
    busiest = world.impressions[C.USER_ID].value_counts().index[:3]
    return [*map(int, busiest), UNKNOWN]


def _candidates(world, user: int) -> pd.DataFrame:
    """Posts the user was shown, recent posts, a repeated post and unknown ids of every kind."""
    posts = world.posts[[C.POST_ID, C.AUTHOR_ID, "topic"]]
    seen = world.impressions.loc[world.impressions[C.USER_ID] == user, C.POST_ID]
    shown = posts[posts[C.POST_ID].isin(seen)]
    unknown = pd.DataFrame(
        {
            C.POST_ID: [UNKNOWN, int(posts[C.POST_ID].iloc[0]), int(posts[C.POST_ID].iloc[1])],
            C.AUTHOR_ID: [
                int(posts[C.AUTHOR_ID].iloc[0]),
                UNKNOWN,
                int(posts[C.AUTHOR_ID].iloc[1]),
            ],
            "topic": [int(posts["topic"].iloc[0]), int(posts["topic"].iloc[0]), UNKNOWN],
        }
    )
    return pd.concat([shown.head(40), posts.tail(30), posts.tail(3), unknown], ignore_index=True)


def test_every_column_equals_feasts_online_read_including_missing_entities(world, store, reader):
    compared = np.zeros(len(FEATURE_COLUMNS), dtype=bool)
    for user in _users(world):
        c = _candidates(world, user)
        args = (user, c[C.POST_ID].tolist(), c[C.AUTHOR_ID].tolist(), c["topic"].tolist())
        now = time.time()
        feast = online_features(store, *args, now)
        ours = reader.read(*args, now)
        assert ours.shape == (len(c), len(FEATURE_COLUMNS)) and ours.dtype == np.float64
        for j, column in enumerate(FEATURE_COLUMNS):
            np.testing.assert_array_equal(
                ours[:, j], feast[column].to_numpy(np.float64), err_msg=f"{user} {column}"
            )
        compared |= np.isfinite(ours).any(axis=0)
    assert compared.all()  # every column compared real values, not only NaN == NaN


def test_missing_entities_are_nan_and_request_time_columns_still_computed(world, reader):
    c = _candidates(world, UNKNOWN)
    got = reader.read_frame(
        UNKNOWN, c[C.POST_ID].tolist(), c[C.AUTHOR_ID].tolist(), c["topic"].tolist(), time.time()
    )
    assert list(got.columns) == list(FEATURE_COLUMNS)
    user_cols = [col for col in FEATURE_COLUMNS if col.startswith("user_")]
    assert got[user_cols].isna().all().all()
    unknown_post = got.iloc[-3]
    assert np.isnan(unknown_post["post_likes"]) and np.isnan(unknown_post["post_age_h"])
    assert unknown_post["hour_of_day"] == unknown_post["hour_of_day"]  # from the request alone
    assert np.isnan(got.iloc[-2]["author_followers"]) and np.isfinite(got.iloc[-2]["post_likes"])
    assert got["post_likes"].iloc[:-3].notna().all()


def test_a_redis_that_does_not_answer_raises_a_redis_error_fast(settings, store):
    from features.online import OnlineReader

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    reader = OnlineReader(settings.model_copy(update={"redis_port": port}), store)
    assert reader.read(1, [], [], [], time.time()).shape == (0, len(FEATURE_COLUMNS))
    t0 = time.perf_counter()
    with pytest.raises(redis.RedisError):
        reader.read(1, [2], [3], [4], time.time())
    assert time.perf_counter() - t0 < 2 * settings.redis_timeout_s + 1.0
    reader.close()


def test_serving_picks_the_fast_reader_and_feasts_reader_reads_the_same(settings, world, store):
    from features.online import FeastReader, OnlineReader, reader_for

    fast = reader_for(settings)
    assert isinstance(fast, OnlineReader)
    user = _users(world)[0]
    c = _candidates(world, user)
    args = (user, c[C.POST_ID].tolist(), c[C.AUTHOR_ID].tolist(), c["topic"].tolist())
    now = time.time()
    np.testing.assert_array_equal(
        FeastReader(settings, store).read(*args, now), fast.read(*args, now)
    )


def _hmget_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_hmget", {}).get("calls", 0))


def test_the_entity_cache_reads_post_and_author_rows_once_and_returns_the_same(
    settings, world, store, reader
):
    from features.online import OnlineReader

    cached = OnlineReader(settings, store, entity_cache_s=60)
    user = _users(world)[0]
    c = _candidates(world, user)
    args = (user, c[C.POST_ID].tolist(), c[C.AUTHOR_ID].tolist(), c["topic"].tolist())
    client = redis.Redis(host=settings.redis_host, port=settings.redis_port, db=settings.redis_db)
    try:
        now = time.time()
        before = _hmget_calls(client)
        first = cached.read(*args, now)
        cold = _hmget_calls(client) - before
        before = _hmget_calls(client)
        second = cached.read(*args, now)
        warm = _hmget_calls(client) - before
    finally:
        cached.close()
        client.close()
    np.testing.assert_array_equal(first, reader.read(*args, now))
    np.testing.assert_array_equal(second, first)
    posts, authors = c[C.POST_ID].nunique(), c[C.AUTHOR_ID].nunique()
    assert cold - warm == posts + authors  # exactly the entity rows came from the cache
    assert warm > 0  # the user's own rows are read every time
