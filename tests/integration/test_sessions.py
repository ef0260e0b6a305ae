"""Scrolling a ranked session on the real stack: cursors page through one ranking with no
repeats, a retried cursor is safe, bad cursors are 400s that say why, an expired or lost session
restarts, every media URL of a page is served by the edge, impressions record the session, and
prefetch off leaves sessions on. (Page 2 with Cassandra or Redis stopped: test_serving.py.)"""

import base64
import time

import httpx
import pandas as pd
import pytest

from core import cache
from core.db import connect
from core.settings import DEV_API_KEY
from core.time import day_bucket
from serving import cursor, sessions
from tests.integration.suite import readers
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
API = {"X-API-Key": DEV_API_KEY}


def _page(service: str, user: int, **params) -> httpx.Response:
    params = {k: v for k, v in params.items() if v is not None}
    return httpx.get(f"{service}/v1/feed/{user}", headers=API, params=params, timeout=30)


def _ok(service: str, user: int, **params) -> dict:
    r = _page(service, user, **params)
    assert r.status_code == 200, r.text
    return r.json()


def _ids(body: dict) -> list[int]:
    return [i["post_id"] for i in body["items"]]


def test_five_pages_never_repeat_a_post_and_every_media_url_is_served(service, settings, world):
    user = readers(world, settings, 1, skip=30)[0]
    limits = [5, 3, 6, 4, 5]  # the limit may change from page to page
    pages, cur = [], None
    for n, limit in enumerate(limits):
        body = _ok(service, user, limit=limit, cursor=cur)
        assert (body["session"], body["page"]) == ("new" if n == 0 else "continued", n)
        assert len(body["items"]) == limit, body
        assert [i["position"] for i in body["items"]] == list(range(limit))
        assert body["degraded"] == []
        pages.append(body)
        cur = body["next_cursor"]
        assert isinstance(cur, str) and cur.startswith("c1.")
    served = [p for body in pages for p in _ids(body)]
    assert len(served) == len(set(served)) == sum(limits)

    items = [i for body in pages for i in body["items"]]
    assert all("score" not in i for i in items)  # debug only
    assert {i["source"] for i in items} <= {"timeline", "pull", "explore"}
    assert all(i["created_at"].endswith("Z") for i in items)
    assert all(i["media_kind"] in ("photo", "video") and i["renditions"] for i in items)
    with httpx.Client(timeout=10) as edge:
        for item in items:
            for r in item["renditions"]:
                assert r["url"].startswith(settings.media_url + "/media/")
                got = edge.get(r["url"])
                assert got.status_code == 200, r
                assert len(got.content) == r["bytes"] == int(got.headers["content-length"]), r
                assert (
                    got.headers["content-type"]
                    == f"{'video' if r['format'] == 'mp4' else 'image'}/{r['format']}"
                )


def test_debug_shows_each_items_score_in_ranked_order(service, settings, world):
    user = readers(world, settings, 1, skip=31)[0]
    body = _ok(service, user, limit=6, debug="true")
    scores = [i["score"] for i in body["items"]]
    assert all(isinstance(s, float) for s in scores)
    assert scores == sorted(scores, reverse=True) or len(body["items"]) < 6


def test_a_retried_cursor_returns_the_same_page(service, settings, world):
    user = readers(world, settings, 1, skip=32)[0]
    first = _ok(service, user, limit=4)
    again = [_ok(service, user, limit=4, cursor=first["next_cursor"]) for _ in range(2)]
    assert _ids(again[0]) == _ids(again[1])
    # The next cursor points at the same place (its expiry is renewed by each answer).
    keys = cursor.Keys.parse(settings.cursor_keys)
    nxt = [cursor.decode(a["next_cursor"], keys, user_id=user) for a in again]
    assert [(c.session_hex, c.page, c.offset) for c in nxt] == [
        (nxt[0].session_hex, 2, nxt[0].offset)
    ] * 2
    assert not set(_ids(first)) & set(_ids(again[0]))
    # A retry with another limit still gets the page that was served for that cursor.
    assert _ids(_ok(service, user, limit=9, cursor=first["next_cursor"])) == _ids(again[0])


def _edited(text: str) -> str:
    v, kid, body, tag = text.split(".")
    raw = bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    raw[11] ^= 0x01  # the page number
    return f"{v}.{kid}.{base64.urlsafe_b64encode(bytes(raw)).rstrip(b'=').decode()}.{tag}"


def test_bad_cursors_are_400s_that_name_the_problem(service, settings, world):
    user, other = readers(world, settings, 2, skip=33)
    cur = _ok(service, user, limit=3)["next_cursor"]
    cases = {
        "another user": _page(service, other, limit=3, cursor=cur),
        "signature": _page(service, user, limit=3, cursor=_edited(cur)),
        "not a feedcast cursor": _page(service, user, cursor="garbage"),
        "unknown key id": _page(service, user, cursor="c1.nokey.AAAA.AAAA"),
    }
    for says, r in cases.items():
        assert r.status_code == 400, (says, r.text)
        assert says in r.json()["detail"], (says, r.text)
    assert _page(service, user, limit=3, cursor=cur).status_code == 200  # the real one still works


def test_an_expired_or_lost_session_restarts_with_a_fresh_first_page(service, settings, world):
    user = readers(world, settings, 1, skip=35)[0]
    keys = cursor.Keys.parse(settings.cursor_keys)
    first = _ok(service, user, limit=4)
    c = cursor.decode(first["next_cursor"], keys, user_id=user)
    stale = cursor.encode(
        cursor.Cursor(user, c.session_id, c.page, c.offset, int(time.time()) - 1), keys
    )
    body = _ok(service, user, limit=4, cursor=stale)
    assert (body["session"], body["page"]) == ("restarted", 0)
    assert body["items"] and body["next_cursor"]

    r = cache.client(settings)
    try:  # what a Redis restart or an eviction does to a session
        assert r.delete(sessions.key(settings, c.session_hex)) == 1
    finally:
        r.close()
    lost = _ok(service, user, limit=4, cursor=first["next_cursor"])
    assert (lost["session"], lost["page"]) == ("restarted", 0) and lost["items"]
    assert lost["degraded"] == []  # Redis answered: the session is gone, nothing failed


def test_impressions_record_the_session_the_page_and_the_session_position(service, settings, world):
    user = readers(world, settings, 1, skip=36)[0]
    first = _ok(service, user, limit=4)
    second = _ok(service, user, limit=3, cursor=first["next_cursor"])
    sid = cursor.decode(first["next_cursor"], cursor.Keys.parse(settings.cursor_keys), user_id=user)
    cluster, session = connect(settings)
    try:
        stmt = session.prepare(
            "SELECT post_id, position, session_id, page, session_position, request_id "
            "FROM impressions_by_user WHERE user_id = ? AND day = ?"
        )

        def rows() -> list:
            out = list(session.execute(stmt, (user, day_bucket(pd.Timestamp.now("UTC")))))
            return [x for x in out if x.session_id == sid.session_hex]

        got = wait_until(lambda: len(rows()) == 7 and rows(), timeout=10, what="7 impressions")
    finally:
        cluster.shutdown()
    by_post = {x.post_id: x for x in got}
    for page, body, offset in ((0, first, 0), (1, second, 4)):
        for k, post in enumerate(_ids(body)):
            x = by_post[post]
            assert (x.page, x.position, x.session_position) == (page, k, offset + k)
            assert x.request_id == body["request_id"]


def test_prefetch_off_never_turns_sessions_off(service, settings, world):
    user = readers(world, settings, 1, skip=37)[0]
    r = cache.client(settings)
    key = cache.prefetch_switch_key(settings)
    r.set(key, "off")
    try:
        time.sleep(1.2)  # pacing, not a condition: replicas re-read the switch once a second
        first = _ok(service, user, limit=5)
        second = _ok(service, user, limit=5, cursor=first["next_cursor"])
        assert second["session"] == "continued" and second["items"]
        assert not set(_ids(first)) & set(_ids(second))
    finally:
        r.delete(key)
        r.close()
        time.sleep(1.2)  # the next test finds every replica with prefetch on again


def test_the_live_check_scrolls_page_after_page_by_cursor(service, settings, world):
    from prefetch.replay import live

    user = readers(world, settings, 1, skip=38)[0]
    cfg = live.LiveConfig(limit=10, pages=3)
    # 25 items: two full pages and half a third; 0.06 s on each keeps under the key's rate.
    script = live.Script(user, 25, [0.06] * 30, [False] * 30)
    scroller = live.Scroller(settings, cfg, service)
    try:
        stats = scroller.play(script)
    finally:
        scroller.close()
    assert (stats.feeds, stats.feed_failures) == (3, 0)
    assert (stats.events, stats.event_failures) == (25, 0)
    assert stats.media >= 25 and stats.media_failures == 0


def _removed_posts(settings) -> set[int]:
    from serving.takedown import BUCKETS

    cluster, session = connect(settings)
    try:
        return {
            int(r.post_id)
            for b in range(BUCKETS)
            for r in session.execute("SELECT post_id FROM posts_removed WHERE bucket = %s", (b,))
        }
    finally:
        cluster.shutdown()


def test_a_page_past_the_heavy_scored_part_scores_more_of_the_session(service, settings, world):
    user = readers(world, settings, 1, skip=39)[0]
    first = _ok(service, user, limit=settings.light_keep)  # takes every heavy-scored row
    assert first["candidates"] > settings.light_keep, first["candidates"]
    # Every heavy-scored row, less any post taken down by the takedown tests on this shared
    # world (removed posts are off every page).
    removed = _removed_posts(settings)
    assert settings.light_keep - len(removed) <= len(first["items"]) <= settings.light_keep
    assert not set(_ids(first)) & removed
    second = _ok(service, user, limit=10, cursor=first["next_cursor"], debug="true")
    # Ranked by the heavy ranker then (not the degraded fallback), nothing repeated.
    assert second["session"] == "continued" and second["degraded"] == [], second
    assert 0 < len(second["items"]) <= 10
    assert not set(_ids(first)) & set(_ids(second))
    assert all(isinstance(i["score"], float) for i in second["items"])
