"""The export's label join: which events count for which impression, ids and defaults."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core import constants as C
from pipelines.export import HASHED_BIT, label_impressions, lake_impressions, request_key

T0 = pd.Timestamp("2026-01-05 12:00:00", tz="UTC")
WINDOW_S = 1800.0


def _pages(*rows: tuple[str, int, int, float]) -> pd.DataFrame:
    """(request_id, position, post_id, seconds after T0) for user 1; author = post + 100."""
    return pd.DataFrame(
        {
            C.USER_ID: 1,
            C.EVENT_TS: [T0 + pd.Timedelta(seconds=s) for _, _, _, s in rows],
            C.REQUEST_ID: [r for r, _, _, _ in rows],
            C.POSITION: [p for _, p, _, _ in rows],
            C.POST_ID: [post for _, _, post, _ in rows],
            C.AUTHOR_ID: [post + 100 for _, _, post, _ in rows],
            "model_version": "m",
            "propensity": 0.5,
            "shown_propensity": 0.8,
            "explored": True,
        }
    )


def _events(*rows: tuple[int, str, float, float | None]) -> pd.DataFrame:
    """(post_id, kind, seconds after T0, dwell_s) for user 1."""
    return pd.DataFrame(
        {
            C.USER_ID: 1,
            C.EVENT_TS: [T0 + pd.Timedelta(seconds=s) for _, _, s, _ in rows],
            "event_id": [f"e{i}" for i in range(len(rows))],
            C.POST_ID: [p for p, _, _, _ in rows],
            C.AUTHOR_ID: [p + 100 for p, _, _, _ in rows],
            "kind": [k for _, k, _, _ in rows],
            "dwell_s": [d for _, _, _, d in rows],
        }
    )


def test_an_event_counts_from_the_serving_instant_to_the_window_end_inclusive():
    pages = _pages(("1", 0, 10, 0.0), ("2", 0, 20, 0.0), ("3", 0, 30, 0.0), ("4", 0, 40, 0.0))
    events = _events(
        (10, C.LIKE, 0.0, None),  # at the serving instant: counts
        (20, C.SAVE, WINDOW_S, None),  # at the window's last instant: counts
        (30, C.LIKE, WINDOW_S + 0.001, None),  # a millisecond later: does not
        (40, C.COMMENT, -0.001, None),  # before the page was served: does not
    )
    out = label_impressions(pages, events, WINDOW_S)
    assert out[C.LIKE].tolist() == [True, False, False, False]
    assert out[C.SAVE].tolist() == [False, True, False, False]
    assert not out[C.COMMENT].any()
    assert out[C.LABEL].tolist() == [1, 3, 0, 0]


def test_an_event_counts_once_for_the_latest_showing_of_the_post():
    pages = _pages(("1", 0, 10, 0.0), ("2", 3, 10, 600.0))
    out = label_impressions(pages, _events((10, C.LIKE, 601.0, None)), WINDOW_S)
    assert out[C.LIKE].tolist() == [False, True]


def test_a_long_view_belongs_to_the_showing_it_began_on_not_a_later_one():
    """The post shown at 0 s is viewed for 23.8 s; the same post is shown again at 10 s and
    viewed for 1.3 s. Each dwell event (stamped when the view ended) goes to its own showing,
    though the first one's end falls after the second showing (CI caught this)."""
    pages = _pages(("1", 0, 10, 0.0), ("2", 0, 10, 10.0))
    events = _events((10, "dwell", 23.8, 23.8), (10, "dwell", 11.3, 1.3))
    out = label_impressions(pages, events, WINDOW_S)
    assert out["dwell_s"].tolist() == [23.8, 1.3]


def test_other_users_posts_and_kinds_do_not_label():
    pages = _pages(("1", 0, 10, 0.0))
    events = _events((11, C.LIKE, 1.0, None), (10, "impression", 0.0, None))
    other = _events((10, C.SAVE, 1.0, None)).assign(**{C.USER_ID: 2})
    out = label_impressions(pages, pd.concat([events, other]), WINDOW_S)
    assert out[C.LABEL].tolist() == [0]
    assert not out[[C.LIKE, C.COMMENT, C.SAVE]].to_numpy().any()


def test_label_is_the_most_valuable_engagement_and_dwell_comes_from_the_dwell_event():
    pages = _pages(("1", 0, 10, 0.0), ("1", 1, 20, 2.0))
    events = _events((10, C.LIKE, 1.0, None), (10, C.COMMENT, 5.0, None), (10, "dwell", 4.5, 4.5))
    out = label_impressions(pages, events, WINDOW_S)
    assert out[C.LABEL].tolist() == [C.RELEVANCE[C.COMMENT], 0]
    # The second item never sent a dwell event: 0.0, not NaN.
    assert out["dwell_s"].tolist() == [4.5, 0.0]


def test_no_events_at_all_gives_unlabelled_impressions():
    out = label_impressions(_pages(("1", 0, 10, 0.0)), _events(), WINDOW_S)
    assert out[C.LABEL].tolist() == [0] and out["dwell_s"].tolist() == [0.0]


def test_integer_request_ids_are_kept_and_uuids_hash_stably_to_62_bits():
    assert request_key("12345") == 12345
    uid = "0f8fad5b-d9cb-469f-a165-70867728950e"
    key = request_key(uid)
    # Pinned: the lake keeps these ids, so the mapping may never change (no salted hash()).
    assert key == request_key(str(uid)) == 8418560831843117907
    assert HASHED_BIT <= key <= 2**63 - 1  # positive int64, above every integer id
    assert request_key("0f8fad5b-d9cb-469f-a165-70867728950f") != key
    # A number too large for the integer range is hashed, not overflowed.
    assert request_key(str(2**63)) >= HASHED_BIT


def test_lake_rows_hash_ids_mark_in_network_and_fill_unlogged_propensities():
    uid = "a3bb189e-8bf9-3888-9912-ace4e6543002"
    pages = _pages((uid, 0, 10, 0.0), (uid, 1, 20, 2.0))
    pages.loc[1, ["propensity", "shown_propensity"]] = np.nan  # logged before schema v2/v4
    pages["explored"] = pd.Series([True, None], dtype=object)
    follows = pd.DataFrame({C.USER_ID: [1], "followee_id": [110]})
    out = lake_impressions(pages, _events((20, C.SAVE, 3.0, None)), follows, WINDOW_S)
    assert out[C.REQUEST_ID].tolist() == [request_key(uid)] * 2
    assert out["in_network"].tolist() == [True, False]
    assert out["propensity"].tolist() == [0.5, 1.0]
    assert out["shown_propensity"].tolist() == [0.8, 1.0]
    assert out["explored"].tolist() == [True, False]
    assert out[C.SAVE].tolist() == [False, True]
    assert out[C.REQUEST_ID].dtype == np.int64 and out[C.LABEL].dtype == np.int64


@pytest.mark.parametrize("window_s", [1.0, 3600.0])
def test_the_window_is_the_setting_not_a_constant(window_s):
    out = label_impressions(_pages(("1", 0, 10, 0.0)), _events((10, C.LIKE, 2.0, None)), window_s)
    assert out[C.LIKE].tolist() == [window_s >= 2.0]


def test_the_join_gives_back_the_simulators_labels_even_for_users_who_open_the_app_often():
    """Dense sessions (40 a day) put a user's opens seconds apart; sessions must not overlap,
    or a post shown twice within a second of its like could not be told apart by any log."""
    from datetime import UTC, datetime

    from simulator.config import WorldConfig
    from simulator.world import SCROLL_S, generate

    cfg = WorldConfig(users=120, days=2, seed=11, sessions_per_user_day=40.0)
    world = generate(cfg.model_copy(update={"end": datetime(2026, 1, 7, tzinfo=UTC)}))
    imp = world.impressions
    gaps = imp.groupby(C.USER_ID)[C.EVENT_TS].apply(lambda t: t.sort_values().diff().min())
    assert gaps.min() >= pd.Timedelta(seconds=SCROLL_S) - pd.Timedelta(milliseconds=1)
    events = world.interactions.assign(dwell_s=np.nan)
    out = label_impressions(imp[[C.USER_ID, C.POST_ID, C.EVENT_TS]], events, WINDOW_S)
    assert imp[C.LIKE].sum() > 100
    for kind in C.ENGAGEMENT_KINDS:
        assert out[kind].to_numpy().tolist() == imp[kind].to_numpy().tolist(), kind
