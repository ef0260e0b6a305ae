"""generate → materialize → train → register → serve → HTTP → a ranked feed from @champion."""

from datetime import UTC, datetime

import httpx
import pandas as pd
import pytest

from core import cache, context
from core import constants as C
from core.db import connect
from core.settings import DEV_API_KEY
from core.statements import Statements
from core.time import day_bucket
from tests.waiting import wait_until

API = {"X-API-Key": DEV_API_KEY}

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.slow]


def _reader_with_candidates(world, settings) -> int:
    from simulator.writer import timeline_rows

    tl = timeline_rows(world, settings.pull_follower_threshold)
    recent = tl[tl["created_at"] > pd.Timestamp(world.config.end) - pd.Timedelta(days=2)]
    return int(recent[C.USER_ID].value_counts().index[0])


def _label(settings, trained) -> str:
    return (
        f"{settings.model_name}/{trained.light.version}+"
        f"{settings.heavy_model_name}/{trained.heavy.version}"
    )


def test_feed_is_ranked_by_the_champions(service, settings, world, trained):
    user = _reader_with_candidates(world, settings)
    r = httpx.get(
        f"{service}/v1/feed/{user}", params={"limit": 10, "debug": "true"}, headers=API, timeout=30
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == _label(settings, trained) == r.headers["x-model-version"]
    assert body["user_id"] == user and body["degraded"] == []
    items = body["items"]
    assert 0 < len(items) <= 10
    scores = [i["score"] for i in items]
    assert scores == sorted(scores, reverse=True)
    # Every item is a stored post of the author named (Cassandra's, not the world's: uploads
    # through the API, by other tests too, are real posts); sources add up to the candidates.
    cluster, session = connect(settings)
    try:
        for item in items:
            stored = session.execute(
                "SELECT author_id FROM posts_by_id WHERE post_id = %s", (item["post_id"],)
            ).one()
            assert stored is not None and stored.author_id == item["author_id"], item
    finally:
        cluster.shutdown()
    assert body["sources"]["timeline"] > 0
    assert set(body["sources"]) <= {"timeline", "pull", "explore"}
    assert sum(body["sources"].values()) == body["candidates"]


def test_served_pages_are_logged_as_impressions(service, settings, world):
    user = _reader_with_candidates(world, settings)
    body = httpx.get(
        f"{service}/v1/feed/{user}", params={"limit": 5}, headers=API, timeout=30
    ).json()
    cluster, session = connect(settings)

    def logged() -> list:
        today = day_bucket(datetime.now(UTC))
        rows = [
            r
            for day in (today - 1, today)
            for r in session.execute(
                "SELECT request_id, position, post_id, model_version FROM impressions_by_user "
                "WHERE user_id = %s AND day = %s",
                (user, day),
            )
            if r.request_id == body["request_id"]
        ]
        return rows if len(rows) >= len(body["items"]) else []

    try:
        rows = wait_until(logged, timeout=10, what="the served page's impressions in Cassandra")
    finally:
        cluster.shutdown()
    assert sorted((r.position, r.post_id) for r in rows) == [
        (i, item["post_id"]) for i, item in enumerate(body["items"])
    ]
    assert {r.model_version for r in rows} == {body["model_version"]}


def test_blocked_authors_and_engaged_posts_never_come_back(service, settings, world):
    user = _reader_with_candidates(world, settings)
    first = httpx.get(
        f"{service}/v1/feed/{user}", params={"limit": 5}, headers=API, timeout=30
    ).json()
    top_author = first["items"][0]["author_id"]
    cluster, session = connect(settings)
    stmts = Statements(session, settings)
    r = cache.client(settings)

    def forget(users: list[int]) -> None:  # the service's copy of the context (ContextCache)
        r.delete(*[cache.context_key(settings, u) for u in users])

    try:  # the table of record, the context, and the serving copy of it
        context.block(session, stmts, user, top_author, forget=forget)
        again = httpx.get(
            f"{service}/v1/feed/{user}", params={"limit": 20}, headers=API, timeout=30
        ).json()
    finally:
        context.unblock(session, stmts, user, top_author, forget=forget)
        cluster.shutdown()
        r.close()
    assert again["items"]
    assert top_author not in {i["author_id"] for i in again["items"]}
    served = pd.read_parquet(settings.world_dir / "interactions.parquet")  # what Cassandra holds
    engaged = set(served.loc[served[C.USER_ID] == user, C.POST_ID])
    assert not engaged & {i["post_id"] for i in again["items"]}


def test_unknown_user_is_a_404_that_says_so(service):
    r = httpx.get(f"{service}/v1/feed/987654321", headers=API, timeout=30)
    assert r.status_code == 404
    assert "unknown user_id 987654321" in r.json()["detail"]


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=ten"])
def test_bad_limit_is_a_422_naming_the_field(service, world, query):
    r = httpx.get(f"{service}/v1/feed/1?{query}", headers=API, timeout=30)
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["query", "limit"]


def test_bad_user_id_is_a_422(service):
    r = httpx.get(f"{service}/v1/feed/not-a-user", headers=API, timeout=30)
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["path", "user_id"]


def test_health_names_the_models(service, settings, trained):
    r = httpx.get(f"{service}/healthz", timeout=30)
    assert r.status_code == 200
    assert r.json()["model_version"] == _label(settings, trained)
