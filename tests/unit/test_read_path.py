"""The read path's pure parts: TTLs of the recent timeline and context, and candidate selection."""

import numpy as np

from core import context
from serving.candidates import EXPLORE, PULL, TIMELINE, Candidates, select

DAY_MS = 86_400_000
NOW = 1_800_000_000_000


def test_a_row_lives_for_what_is_left_of_the_window():
    assert context.ttl_s(NOW, NOW, 3) == 3 * 86_400
    assert context.ttl_s(NOW - DAY_MS, NOW, 3) == 2 * 86_400
    assert context.ttl_s(NOW - 3 * DAY_MS, NOW, 3) == 0
    assert context.ttl_s(NOW - 5 * DAY_MS, NOW, 3) == 0
    assert context.ttl_s(NOW + DAY_MS, NOW, 3) == 3 * 86_400  # the future: the window, no more


def test_feed_rows_out_of_the_window_are_not_written():
    rows = [(1, NOW - DAY_MS, 10, 5, 2), (1, NOW - 4 * DAY_MS, 11, 5, 2)]
    assert context.feed_args(rows, NOW, 3) == [(1, NOW - DAY_MS, 10, 5, 2, 2 * 86_400)]


def test_engaged_posts_group_by_user_and_ttl_grain():
    events = [
        (1, 100, NOW - 1000),  # 1 s old
        (1, 101, NOW - 60_000),  # a minute old: the same 10-minute grain
        (1, 102, NOW - DAY_MS),
        (2, 100, NOW),
        (1, 103, NOW - 4 * DAY_MS),  # out of the window
    ]
    got = {(user, ttl): posts for ttl, posts, user in context.engaged_args(events, NOW, 3)}
    assert got == {
        (1, 3 * 86_400): {100, 101},
        (1, 2 * 86_400): {102},
        (2, 3 * 86_400): {100},
    }
    for ttl, _, _ in context.engaged_args(events, NOW, 3):  # rounded up, never past the window
        assert ttl % context.TTL_GRAIN_S == 0 and ttl <= 3 * 86_400


def _cands(rows, source):
    return Candidates.from_rows(rows, source)


def test_selection_caps_each_source_newest_first_and_keeps_a_post_once():
    timeline = _cands([(1, 7, NOW - 5, 0), (2, 7, NOW - 1, 0), (3, 8, NOW - 3, 0)], TIMELINE)
    pulled = _cands([(4, 9, NOW - 2, 0), (2, 7, NOW - 1, 0), (5, 9, NOW - 9, 0)], PULL)
    explore = _cands([(6, 3, NOW - 4, 0), (4, 9, NOW - 2, 0)], EXPLORE)
    got = select([(timeline, 2), (pulled, 5), (explore, 5)], total=10, now_ms=NOW)
    assert got.post.tolist() == [2, 3, 4, 5, 6]
    assert got.source.tolist() == [TIMELINE, TIMELINE, PULL, PULL, EXPLORE]
    assert got.source_counts() == {"timeline": 2, "pull": 2, "explore": 1}


def test_selection_drops_seen_blocked_and_future_posts_and_stops_at_the_total():
    timeline = _cands([(1, 7, NOW - 5, 0), (2, 8, NOW - 1, 0), (3, 9, NOW + 60_000, 0)], TIMELINE)
    explore = _cands([(6, 3, NOW - 4, 0), (7, 3, NOW - 6, 0)], EXPLORE)
    got = select(
        [(timeline, 10), (explore, 10)],
        total=2,
        now_ms=NOW,
        seen=frozenset({1}),
        blocked=frozenset({8}),
    )
    assert got.post.tolist() == [6, 7]
    none = select([(timeline, 10)], total=10, now_ms=NOW, blocked=frozenset({7, 8, 9}))
    assert len(none) == 0 and none.post.dtype == np.int64


def test_cache_copies_expire_spread_out_and_never_past_their_ttl():
    from serving.candidates import JITTER, jittered_ttl_ms

    ttls = [jittered_ttl_ms(60.0) for _ in range(2000)]
    assert min(ttls) >= 60_000 * (1 - JITTER) and max(ttls) <= 60_000
    assert max(ttls) - min(ttls) > 60_000 * JITTER * 0.9  # spread over the whole range


def test_cached_items_round_trip_and_keep_their_json() -> None:
    """A page cached by one version of the code loads in the next: the bytes are asdict's."""
    import json
    from dataclasses import asdict

    from core.cache import CachedItem, dump_items, load_items

    items = [
        CachedItem(11, 7, 3, 1.7e9, 0.5, "photo", 120_000, 3.25, "timeline"),
        CachedItem(12, 8, 0, 1.7e9 + 1, -1.0),  # defaults: unknown media, no dwell
    ]
    raw = dump_items(items)
    assert raw == json.dumps([asdict(i) for i in items], separators=(",", ":")).encode()
    assert load_items(raw) == items
