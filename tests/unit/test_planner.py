"""The prefetch planner: rules per page, and the bulk version the replay uses."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from media import objects as media
from prefetch import planner

CFG = planner.PlanConfig(
    threshold=0.7, refresh_threshold=0.5, first_screen=2, lookahead=2, max_object_bytes=1_000_000
)


def test_page_served_warms_ahead_of_the_first_screen_only() -> None:
    posts = [10, 11, 12, 13, 14]
    acts = planner.plan(posts, [False] * 5, [200_000] * 5, 0.9, 0.5, cfg=CFG)
    # position 2 only: positions 0-1 are loaded with the page, lookahead 2 from position 0
    assert [(a.post_id, a.variant, a.position) for a in acts] == [(12, "full", 2)]
    assert acts[0].p_use == pytest.approx(0.81)
    assert acts[0].path == "/media/12/full"


def test_impression_warms_lookahead_position_and_threshold_applies() -> None:
    posts = list(range(100, 110))
    args = ([False] * 10, [200_000] * 10)
    acts = planner.plan(posts, *args, 0.9, 0.5, at=4, cfg=CFG)
    assert [(a.post_id, a.position, a.fetch) for a in acts] == [(106, 6, True)]
    # 0.8² = 0.64: under the fetch threshold, over the refresh one → refresh only
    acts = planner.plan(posts, *args, 0.8, 0.5, at=4, cfg=CFG)
    assert [(a.post_id, a.fetch, a.path) for a in acts] == [(106, False, "/refresh/media/106/full")]
    assert planner.plan(posts, *args, 0.7, 0.5, at=4, cfg=CFG) == []  # 0.49 < 0.5
    assert planner.plan(posts, *args, 0.9, 0.5, at=8, cfg=CFG) == []  # past the page


def test_a_post_with_stored_renditions_warms_its_real_object_at_its_real_size() -> None:
    posts = [10, 11, 12, 13, 14]
    stored = {12: ("/media/r/" + "a" * 64 + ".avif", 31_337)}
    acts = planner.plan(posts, [False] * 5, [200_000] * 5, 0.9, 0.5, cfg=CFG, stored=stored)
    assert [(a.path, a.bytes) for a in acts] == [(stored[12][0], 31_337)]
    acts = planner.plan(posts, [False] * 5, [200_000] * 5, 0.8, 0.5, cfg=CFG, stored=stored)
    assert [a.path for a in acts] == ["/refresh" + stored[12][0]]  # 0.64: refreshed only
    small = planner.plan(
        posts, [False] * 5, [200_000] * 5, 0.9, 0.5, cfg=CFG, stored=stored, budget_bytes=30_000
    )
    assert small == []  # the real size counts against the budget


def test_video_thumb_fetched_full_fetched_only_if_likely_and_small() -> None:
    posts = [1, 2, 3, 4]
    vid = [True] * 4
    full = [800_000, 800_000, 800_000, 4_000_000]

    def kinds(acts: list[planner.WarmAction]) -> list[tuple[str, bool]]:
        return [(a.variant, a.fetch) for a in acts]

    likely = planner.plan(posts, vid, full, 0.95, 0.9, at=0, cfg=CFG)
    assert kinds(likely) == [("thumb", True), ("full", True)]
    assert likely[0].bytes == media.thumb_bytes(3)
    unsure = planner.plan(posts, vid, full, 0.95, 0.6, at=0, cfg=CFG)
    assert kinds(unsure) == [("thumb", True), ("full", False)]
    unlikely = planner.plan(posts, vid, full, 0.95, 0.3, at=0, cfg=CFG)
    assert kinds(unlikely) == [("thumb", True)]
    big = planner.plan(posts, vid, full, 0.95, 0.99, at=1, cfg=CFG)
    assert kinds(big) == [("thumb", True), ("full", False)]  # a 4 MB stream: refreshed only


def test_budget_and_bad_input() -> None:
    acts = planner.plan([1, 2, 3], [False] * 3, [500_000] * 3, 1.0, 1.0, budget_bytes=100, cfg=CFG)
    assert acts == []  # the budget binds fetches only; nothing here is refresh-only
    with pytest.raises(ValueError, match="p_continue"):
        planner.plan([1], [False], [1], 1.5, 0.5)
    with pytest.raises(ValueError, match="same length"):
        planner.plan([1, 2], [False], [1], 0.9, 0.5)
    with pytest.raises(ValueError, match="threshold"):
        planner.PlanConfig(threshold=0.0)
    with pytest.raises(ValueError, match="refresh_threshold"):
        planner.PlanConfig(threshold=0.5, refresh_threshold=0.6)


def test_autoplay_from_dwell() -> None:
    p = planner.p_autoplay_from_dwell(np.array([1.0, 10.0]))
    assert p[0] == pytest.approx(np.exp(-1.0))
    assert p[1] > 0.9


def test_bulk_equals_page_by_page() -> None:
    rng = np.random.default_rng(4)
    n_s = 40
    s_len = rng.integers(1, 15, n_s)
    s_first = np.r_[0, np.cumsum(s_len)[:-1]]
    n_items = int(s_len.sum())
    page_post = rng.integers(1, 10_000, n_items)
    page_video = rng.random(n_items) < 0.3
    page_full = np.where(page_video, rng.integers(300_000, 3_000_000, n_items), 250_000)
    page_thumb = np.asarray(media.thumb_bytes(page_post))
    p_cont = rng.uniform(0.7, 0.99, n_s)
    p_auto = rng.uniform(0.3, 1.0, n_s)
    s_start = np.arange(n_s) * 100.0
    depth = np.minimum(rng.integers(1, 15, n_s), s_len)
    v_session = np.repeat(np.arange(n_s), depth)
    v_pos = np.arange(len(v_session)) - np.repeat(np.r_[0, np.cumsum(depth)[:-1]], depth)
    v_time = s_start[v_session] + v_pos * 3.0 + 0.5
    t, obj, size, kind = planner.plan_bulk(
        CFG,
        SimpleNamespace(
            s_first=s_first,
            s_len=s_len,
            s_start_s=s_start,
            s_p_continue=p_cont,
            s_p_autoplay=p_auto,
            v_session=v_session,
            v_pos=v_pos,
            v_time_s=v_time,
            page_post=page_post,
            page_video=page_video,
            page_full_bytes=page_full,
            page_thumb_bytes=page_thumb,
        ),
    )
    expect = []
    for s in range(n_s):
        sl = slice(s_first[s], s_first[s] + s_len[s])
        args = (page_post[sl].tolist(), page_video[sl].tolist(), page_full[sl].tolist())
        for at, when in [(None, s_start[s])] + [
            (int(k), v_time[v_session == s][i]) for i, k in enumerate(v_pos[v_session == s])
        ]:
            for a in planner.plan(*args, float(p_cont[s]), float(p_auto[s]), at=at, cfg=CFG):
                oid = media.object_id(a.post_id, a.variant)
                expect.append((when, int(oid), a.bytes, 1 if a.fetch else 2))
    got = zip(t.tolist(), obj.tolist(), size.tolist(), kind.tolist(), strict=True)
    assert sorted(got) == sorted(expect)
    assert {e[3] for e in expect} == {1, 2}
    assert len(expect) > 20
