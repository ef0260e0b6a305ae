"""The first page's read path on the real stack (schema v6): the recent timeline in one TTL-trimmed
partition with a Redis copy, and the user's context kept where it changes. (Cassandra down: the
fallback page, test_serving.py.)"""

import time
import uuid
from datetime import UTC, datetime

import httpx
import pytest

from core import constants as C
from core import context
from core.breaker import Breaker
from core.cache import client as redis_client
from core.cache import context_key, timeline_key
from core.db import connect
from core.settings import DEV_API_KEY
from core.statements import Statements
from pipelines.steps import rebuild_context
from serving import candidates
from tests.integration.suite import readers
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration]
API = {"X-API-Key": DEV_API_KEY}


@pytest.fixture(scope="module")
def db(settings):
    cluster, session = connect(settings)
    yield session, Statements(session, settings)
    cluster.shutdown()


@pytest.fixture(scope="module")
def redis(settings):
    r = redis_client(settings)
    yield r
    r.close()


def _gather(settings, db, user, *, cache=None):
    session, stmts = db
    s = settings
    return candidates.gather(
        session,
        stmts,
        user,
        context.to_ms(datetime.now(UTC)),
        days=s.timeline_days,
        pull_threshold=s.pull_follower_threshold,
        caps=candidates.Caps(s.cap_timeline, s.cap_pull, s.cap_explore, s.feed_max_candidates),
        timeout_s=5.0,
        timeline_cache=cache,
    )


@pytest.fixture
def new_user(db):
    """A user with no follows, no timeline and no events; removed afterwards."""
    session, stmts = db
    user = 9_000_000_000 + uuid.uuid4().int % 1_000_000_000
    session.execute(stmts.insert_user, (user, datetime.now(UTC), 0, 0))
    session.execute(stmts.context_known, (user,))
    yield user
    for table in ("users_by_id", "user_context", "feed_by_user", "blocks_by_user"):
        session.execute(f"DELETE FROM {table} WHERE user_id = %s", (user,))
    session.execute("DELETE FROM follows_by_user WHERE user_id = %s", (user,))


def test_an_upload_reaches_the_followers_next_first_page_past_their_cached_copy(
    service, settings, world, db, redis
):
    session, _ = db
    followers = world.users.set_index(C.USER_ID)["follower_count"]
    small = followers[(followers > 0) & (followers <= settings.pull_follower_threshold)]
    author = int(small.index[0])
    follower = int(world.follows.loc[world.follows["followee_id"] == author, C.USER_ID].iloc[0])
    cache = candidates.TimelineCache(settings, redis, Breaker(1.0))
    _gather(settings, db, follower, cache=cache)  # the follower's copy is in Redis now
    assert redis.exists(timeline_key(settings, follower))
    post_id = 8_000_000_000 + uuid.uuid4().int % 1_000_000_000
    body = {"post_id": post_id, "author_id": author, "topic": 2, "media_kind": "photo"}
    body["media_bytes"] = 120_000
    r = httpx.post(f"{service}/v1/posts", headers=API, json=body, timeout=30)
    assert r.status_code == 202, r.text
    try:
        wait_until(
            lambda: (copy := cache.get(follower)) is not None and copy.post[0] == post_id,
            timeout=15,
            what="the post at the head of the follower's cached copy (fan-out adds it there)",
        )
        assert post_id in _gather(settings, db, follower, cache=cache)[0].post.tolist()
        got, _ = _gather(settings, db, follower, cache=cache)
        k = got.post.tolist().index(post_id)
        assert candidates.SOURCES[got.source[k]] == "timeline" and got.author[k] == author
        row = session.execute(
            "SELECT TTL(author_id) AS ttl FROM feed_by_user WHERE user_id = %s AND "
            "created_ms = %s AND post_id = %s",
            (follower, int(got.created_ms[k]), post_id),
        ).one()
        window = context.window_s(settings.timeline_days)
        assert window - 120 < row.ttl <= window  # the whole window: the post is new
    finally:  # leave the world as the other tests know it
        stored = session.execute(
            "SELECT created_at FROM posts_by_id WHERE post_id = %s", (post_id,)
        ).one()
        session.execute("DELETE FROM posts_by_id WHERE post_id = %s", (post_id,))
        if stored is not None:
            created_ms = context.to_ms(stored.created_at)
            for f in world.follows.loc[world.follows["followee_id"] == author, C.USER_ID]:
                session.execute(
                    "DELETE FROM feed_by_user WHERE user_id = %s AND created_ms = %s "
                    "AND post_id = %s",
                    (int(f), created_ms, post_id),
                )
        redis.delete(timeline_key(settings, follower))


def test_the_cached_copy_takes_a_new_post_at_its_head_once_and_keeps_its_ttl(settings, redis):
    cache = candidates.TimelineCache(settings, redis, Breaker(1.0))
    user = 9_100_000_000 + uuid.uuid4().int % 1_000_000
    key = timeline_key(settings, user)
    now = context.to_ms(datetime.now(UTC))
    rows = [(100 + i, 7, now - 1000 * (i + 1), 1) for i in range(settings.cap_timeline)]
    try:
        cache.add([user], (1, 7, now, 1))  # no copy: nothing is made up
        assert not redis.exists(key)
        cache.put(user, candidates.Candidates.from_rows(rows, candidates.TIMELINE))
        ttl = redis.pttl(key)
        cache.add([user], (1, 7, now, 2))
        cache.add([user], (1, 7, now, 2))  # a fan-out that ran twice
        copy = cache.get(user)
        assert copy is not None and len(copy) == settings.cap_timeline  # cut to the cap
        assert copy.post[:3].tolist() == [1, 100, 101] and copy.topic[0] == 2
        assert copy.post.tolist().count(1) == 1 and 100 + settings.cap_timeline - 1 not in copy.post
        assert 0 < redis.pttl(key) <= ttl  # the copy's TTL, not a new one
        cache.add([user], (2, 7, now - 500, 1))  # older than the head: the copy goes
        assert not redis.exists(key)
    finally:
        redis.delete(key)


def test_timeline_rows_leave_the_read_when_their_ttl_runs_out(settings, db, new_user):
    session, stmts = db
    now = context.to_ms(datetime.now(UTC))
    session.execute(stmts.insert_feed, (new_user, now - 1000, 11, 5, 1, 2))  # 2 s left
    session.execute(stmts.insert_feed, (new_user, now - 2000, 12, 5, 1, 3600))
    first, ctx = _gather(settings, db, new_user)
    assert ctx.known and {11, 12} <= set(first.post.tolist())
    time.sleep(3)
    later, _ = _gather(settings, db, new_user)
    assert 11 not in later.post.tolist() and 12 in later.post.tolist()


def test_a_user_with_no_timeline_gets_a_page_of_explore_posts(service, settings, new_user):
    r = httpx.get(f"{service}/v1/feed/{new_user}", headers=API, params={"limit": 5}, timeout=30)
    assert r.status_code == 200, r.text
    page = r.json()
    assert page["items"] and page["degraded"] == []
    assert {i["source"] for i in page["items"]} == {"explore"}
    assert page["sources"] == {"explore": page["candidates"]}


def test_follows_and_blocks_change_the_very_next_read(settings, world, db, new_user):
    session, stmts = db
    followers = world.users.set_index(C.USER_ID)["follower_count"]
    big = int(followers.idxmax())
    assert followers[big] > settings.pull_follower_threshold
    before, _ = _gather(settings, db, new_user)
    assert big not in before.author.tolist()

    context.follow(session, stmts, new_user, big, int(followers[big]))
    followed, ctx = _gather(settings, db, new_user)
    assert big in ctx.followees
    pulled = followed.author == big
    assert pulled.any() and {candidates.SOURCES[s] for s in followed.source[pulled]} == {"pull"}

    context.block(session, stmts, new_user, big)
    assert session.execute(stmts.blocked, (new_user,)).one()[0] == big  # the table of record
    blocked, _ = _gather(settings, db, new_user)
    assert big not in blocked.author.tolist()

    context.unblock(session, stmts, new_user, big)
    assert big in _gather(settings, db, new_user)[0].author.tolist()
    context.unfollow(session, stmts, new_user, big)
    after, ctx = _gather(settings, db, new_user)
    assert big not in ctx.followees and not (after.source == candidates.PULL).any()


def test_an_engagement_keeps_the_post_out_of_the_next_first_page(
    service, settings, world, db, redis
):
    (user,) = readers(world, settings, 1, skip=40)

    def page() -> dict:
        r = httpx.get(f"{service}/v1/feed/{user}", headers=API, params={"limit": 5}, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()

    first = page()
    assert redis.exists(context_key(settings, user))  # the service keeps a copy of the context
    item = first["items"][0]
    post = item["post_id"]
    _, ctx = _gather(settings, db, user)
    assert post not in ctx.engaged
    event = {
        "event_id": f"read-path-{uuid.uuid4().hex}",
        "kind": "like",
        "user_id": user,
        "post_id": post,
        "author_id": item["author_id"],
        "ts": datetime.now(UTC).isoformat(),
    }
    r = httpx.post(f"{service}/v1/events", headers=API, json={"events": [event]}, timeout=30)
    assert r.status_code == 200, r.text
    assert not redis.exists(context_key(settings, user))  # ... which the event dropped
    after, ctx = _gather(settings, db, user)
    assert post in ctx.engaged and post not in after.post.tolist()
    assert post not in [i["post_id"] for i in page()["items"]]


def test_rebuild_restores_a_lost_context_from_the_tables_of_record(settings, world, db):
    session, stmts = db

    def ctx(u: int) -> context.UserContext:
        return context.parse(session.execute(stmts.get_context, (u,)).one())

    # A reader who engaged with posts lately, so that the engaged set has something to restore.
    user = next(u for u in readers(world, settings, 10, skip=41) if ctx(u).engaged)
    before = ctx(user)
    timeline_before, _ = _gather(settings, db, user)
    session.execute("DELETE FROM user_context WHERE user_id = %s", (user,))
    _, lost = _gather(settings, db, user)
    assert not lost.known  # the feed would answer 404: the context is what says "a user"
    counts = rebuild_context(settings, [user])
    after = ctx(user)
    assert counts["users"] == 1 and after.known
    assert after.followees == before.followees and after.blocked == before.blocked
    # Engaged posts come back from interactions_by_user (a post whose event sits on the
    # window's edge may expire in between).
    assert len(after.engaged & before.engaged) >= 0.95 * len(before.engaged)
    timeline_after, _ = _gather(settings, db, user)
    assert set(timeline_after.post.tolist()) == set(timeline_before.post.tolist())
