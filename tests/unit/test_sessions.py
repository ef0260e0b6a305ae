"""Cursors (signing, tampering, ownership, rotation) and the paging of a ranked session, as pure
logic; the Redis side and the API are tested on the real stack (tests/integration)."""

import base64
import math

import numpy as np
import pytest

from media import objects
from serving import cursor, sessions
from serving.rules import RuleConfig

KEYS = cursor.Keys.parse(["k2:0123456789abcdef0123", "k1:fedcba9876543210fedc"])
SID = bytes.fromhex("00112233aabbccdd")


def _c(**kw) -> cursor.Cursor:
    mine = {"user_id": 7, "session_id": SID, "page": 2, "offset": 40, "expires_at": 2_000_000_000}
    return cursor.Cursor(**(mine | kw))


def test_a_cursor_round_trips_and_is_short_and_url_safe():
    text = cursor.encode(_c(), KEYS)
    assert cursor.decode(text, KEYS, user_id=7) == _c()
    assert text.startswith("c1.k2.") and len(text) < 90
    assert all(ch.isalnum() or ch in "-_." for ch in text)


def test_another_users_cursor_is_refused_by_name():
    with pytest.raises(cursor.CursorError, match="another user"):
        cursor.decode(cursor.encode(_c(), KEYS), KEYS, user_id=8)


@pytest.mark.parametrize("where", ["payload", "tag"])
def test_an_edited_cursor_fails_its_signature(where):
    v, kid, body, tag = cursor.encode(_c(), KEYS).split(".")
    raw = bytearray(base64.urlsafe_b64decode((body if where == "payload" else tag) + "=="))
    raw[5] ^= 0x01  # one bit: the page number, or the tag
    edited = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    text = f"{v}.{kid}.{edited}.{tag}" if where == "payload" else f"{v}.{kid}.{body}.{edited}"
    with pytest.raises(cursor.CursorError, match="signature"):
        cursor.decode(text, KEYS, user_id=7)


@pytest.mark.parametrize(
    "text, says",
    [
        ("", "not a feedcast cursor"),
        ("hello", "not a feedcast cursor"),
        ("c2.k2.a.b", "not a feedcast cursor"),
        ("c1.zz.a.b", "unknown key id"),
        ("c1.k2.!!!.b", "base64url|signature"),
        ("c1.k2." + "A" * 300, "longer than"),
    ],
)
def test_garbage_is_refused_with_what_is_wrong(text, says):
    with pytest.raises(cursor.CursorError, match=says):
        cursor.decode(text, KEYS, user_id=7)


def test_rotation_verifies_with_an_old_key_and_signs_with_the_new():
    old = cursor.Keys.parse(["k1:fedcba9876543210fedc"])
    issued_before = cursor.encode(_c(), old)
    assert cursor.decode(issued_before, KEYS, user_id=7) == _c()  # k1 is still configured
    assert cursor.encode(_c(), KEYS).split(".")[1] == "k2"
    with pytest.raises(cursor.CursorError, match="unknown key id"):
        cursor.decode(issued_before, cursor.Keys.parse(["k2:0123456789abcdef0123"]), user_id=7)


def test_expiry_is_checked_apart_from_validity():
    c = _c(expires_at=1000)
    assert cursor.expired(c, 1000.0) and not cursor.expired(c, 999.0)


# -- paging a session ------------------------------------------------------------------------


def _session(n: int = 30, scored: int = 12, authors: int = 10) -> sessions.FeedSession:
    post = np.arange(100, 100 + n)
    rows = sessions.pack(
        post,
        post % authors,
        1.7e9 + post,
        post % 3,
        ["timeline"] * n,
        [True] * n,
    )
    rows["score"][:scored] = np.linspace(1.0, 0.1, scored)
    return sessions.FeedSession(7, SID.hex(), "m/1", 1.7e9, rows)


def _serve(sess: sessions.FeedSession, limit: int) -> list[int]:
    rows = sessions.next_page(sess, limit, RuleConfig(max_per_author=2))
    sess.pages.append([sessions.PageItem(k, "photo", 1000) for k in rows])
    return [int(sess.rows["post"][k]) for k in rows]


def test_pages_never_repeat_a_post_and_limit_may_change():
    sess = _session()
    pages = [_serve(sess, 5), _serve(sess, 3), _serve(sess, 4)]
    flat = [p for page in pages for p in page]
    assert [len(p) for p in pages] == [5, 3, 4]
    assert len(flat) == len(set(flat)) == sess.offset() == 12
    assert pages[0] == [100, 101, 102, 103, 104]  # best scores first


def test_a_page_takes_only_heavy_scored_rows_until_more_are_scored():
    sess = _session(scored=12)
    assert sess.scored_until() == 12 and sessions.unscored_left(sess) == 18
    _serve(sess, 10)
    assert len(_serve(sess, 10)) == 2  # the caller heavy-scores more when a page comes up short
    sess.rows["score"][12:20] = 0.05
    assert sess.scored_until() == 20 and len(_serve(sess, 10)) == 8


def test_a_taken_down_post_is_left_off_the_next_pages_which_stay_full():
    sess = _session()
    assert _serve(sess, 3) == [100, 101, 102]
    removed = np.array([103, 105, 999], np.int64)  # 999: not in this session
    rows = sessions.next_page(sess, 4, RuleConfig(max_per_author=2), removed)
    assert [int(sess.rows["post"][k]) for k in rows] == [104, 106, 107, 108]


def test_author_diversity_holds_per_page_over_what_is_left():
    sess = _session(n=20, scored=20, authors=2)  # every post by author 0 or 1
    page = _serve(sess, 6)
    assert len(page) == 6  # backfilled past the soft cap: nothing else is left to show
    assert sessions.remaining(sess) == 14


def test_rows_survive_the_bytes_they_are_stored_as():
    sess = _session()
    back = np.frombuffer(sess.rows.tobytes(), dtype=sessions.ROW)
    for f in sessions.ROW.names:
        assert np.array_equal(back[f], sess.rows[f], equal_nan=back[f].dtype.kind == "f"), f
    assert all(math.isnan(x) for x in back["score"][12:])


def test_renditions_declare_what_the_origin_serves_at_the_edge():
    out = objects.renditions(42, "video", 3_000_000, base_url="http://edge:8088", scale=0.1)
    assert [r["variant"] for r in out] == ["thumb", "full"]
    assert [r["format"] for r in out] == ["jpeg", "mp4"]
    assert out[1]["bytes"] == 300_000 and out[1]["url"] == "http://edge:8088/media/42/full"
    assert out[0]["bytes"] == objects.served_bytes(objects.thumb_bytes(42), 0.1)
    assert objects.renditions(42, "", 0, base_url="x", scale=0.1) == []


@pytest.mark.parametrize("seed", range(20))
def test_next_page_is_the_rules_over_every_row_left(seed):
    """next_page hands the rules a best-first prefix: the same page as over every row left."""
    from serving.rules import Scored, apply_rules

    rng = np.random.default_rng(seed)
    scored = int(rng.integers(20, 200))
    sess = _session(n=200, scored=scored, authors=int(rng.integers(1, 30)))
    sess.rows["in_net"] = rng.random(len(sess.rows)) < 0.5
    sess.rows["score"][:scored] = np.round(rng.random(scored), 1)  # ties included
    rules = RuleConfig(max_per_author=int(rng.integers(1, 4)), max_out_of_network_share=0.3)
    for _ in range(6):
        limit = int(rng.integers(1, 25))
        r, upto, served = sess.rows, sess.scored_until(), sess.served()
        left = [k for k in range(upto) if k not in served]
        items = [
            Scored(
                int(r["post"][k]), int(r["author"][k]), float(r["score"][k]), bool(r["in_net"][k])
            )
            for k in left
        ]
        by_post = {int(r["post"][k]): k for k in left}
        want = [by_post[i.post_id] for i in apply_rules(items, limit, config=rules)]
        got = sessions.next_page(sess, limit, rules)
        assert got == want
        sess.pages.append([sessions.PageItem(k, "photo", 1) for k in got])
