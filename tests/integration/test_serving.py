"""The production serving path on the real stack: keys, limits, idempotent ingest, live reload,
and every degraded mode (Redis and Cassandra are really stopped and restarted here)."""

import asyncio
import threading
import time
import uuid
from datetime import UTC, datetime

import httpx
import pandas as pd
import pytest

from core import cache
from core import constants as C
from core.db import connect
from core.settings import DEV_API_KEY
from core.time import day_bucket
from media import samples
from tests.integration.conftest import own_models, served_as
from tests.integration.suite import LIMITED_KEY, OVERLOAD_KEY
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
API = {"X-API-Key": DEV_API_KEY}


def _reader(world, settings) -> int:
    from simulator.writer import timeline_rows

    tl = timeline_rows(world, settings.pull_follower_threshold)
    recent = tl[tl["created_at"] > pd.Timestamp(world.config.end) - pd.Timedelta(days=2)]
    return int(recent[C.USER_ID].value_counts().index[0])


def _feed(service: str, user: int, **kw) -> httpx.Response:
    return httpx.get(f"{service}/v1/feed/{user}", headers=API, timeout=30, **kw)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/feed/1"),
        ("GET", "/v1/ping"),
        ("POST", "/v1/events"),
        ("POST", "/v1/posts"),
        ("POST", "/v1/uploads"),
        ("GET", "/v1/uploads/1"),
    ],
)
@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_every_v1_route_refuses_a_missing_or_wrong_key(service, method, path, key):
    headers = {"X-API-Key": key} if key else {}
    r = httpx.request(method, f"{service}{path}", headers=headers, json={}, timeout=30)
    assert r.status_code == 401
    assert "API key" in r.json()["detail"]


def test_a_body_over_the_limit_is_a_413(service, settings):
    big = b"x" * (settings.max_body_bytes + 1)
    r = httpx.post(f"{service}/v1/events", headers=API, content=big, timeout=30)
    assert r.status_code == 413
    assert str(settings.max_body_bytes) in r.text


def test_a_bad_event_is_a_422_naming_the_field(service):
    event = {"event_id": "e1", "user_id": 1, "post_id": 1, "kind": "poke", "ts": "2026-01-01T00Z"}
    r = httpx.post(f"{service}/v1/events", headers=API, json={"events": [event]}, timeout=30)
    assert r.status_code == 422
    detail = r.json()["detail"][0]
    # The event's kind picks its schema: the error is the event's, and names the field and tags.
    assert detail["loc"] == ["body", "events", 0], detail
    assert "'kind'" in detail["msg"] and "'poke'" in detail["msg"], detail


def test_a_key_over_its_rate_gets_429_with_retry_after(service, settings):
    # /v1/feed/0 is refused by validation (422) right after the key and the limit are checked:
    # cheap enough to outrun the refill rate from one client.
    n = settings.rate_limit_burst + 5 * int(settings.rate_limit_per_s)
    with httpx.Client(headers={"X-API-Key": LIMITED_KEY}, timeout=30) as c:
        codes = [c.get(f"{service}/v1/feed/0") for _ in range(n)]
    limited = [r for r in codes if r.status_code == 429]
    assert limited, [r.status_code for r in codes]
    assert all(int(r.headers["retry-after"]) >= 1 for r in limited)
    assert {r.status_code for r in codes} == {422, 429}
    # The default key has a bucket of its own: still served.
    assert httpx.get(f"{service}/v1/feed/987654321", headers=API, timeout=30).status_code == 404


def _events(user: int, post: int, prefix: str) -> list[dict]:
    ts = datetime.now(UTC).isoformat()
    return [
        {"event_id": f"{prefix}-like", "user_id": user, "post_id": post, "kind": "like", "ts": ts},
        {"event_id": f"{prefix}-save", "user_id": user, "post_id": post, "kind": "save", "ts": ts},
        {
            "event_id": f"{prefix}-dwell",
            "user_id": user,
            "post_id": post,
            "kind": "dwell",
            "ts": ts,
            "dwell_s": 4.5,
        },
    ]


def test_events_are_stored_once_by_event_id(service, settings, world):
    user, post = int(world.users[C.USER_ID].iloc[3]), int(world.posts[C.POST_ID].iloc[-1])
    prefix = uuid.uuid4().hex[:10]
    batch = _events(user, post, prefix)
    first = httpx.post(f"{service}/v1/events", headers=API, json={"events": batch}, timeout=30)
    assert first.status_code == 200, first.text
    assert first.json() == {"accepted": 3, "duplicates": 0, "conflicts": []}
    again = httpx.post(f"{service}/v1/events", headers=API, json={"events": batch}, timeout=30)
    assert again.json() == {"accepted": 0, "duplicates": 3, "conflicts": []}
    changed = [{**batch[0], "kind": "comment"}]
    clash = httpx.post(f"{service}/v1/events", headers=API, json={"events": changed}, timeout=30)
    assert clash.json()["conflicts"] == [f"{prefix}-like"]
    cluster, session = connect(settings)
    try:
        rows = [
            r
            for r in session.execute(
                "SELECT event_id, kind, dwell_s FROM interactions_by_post WHERE post_id = %s",
                (post,),
            )
            if r.event_id.startswith(prefix)
        ]
    finally:
        cluster.shutdown()
    assert sorted((r.event_id, r.kind, r.dwell_s) for r in rows) == [
        (f"{prefix}-dwell", "dwell", 4.5),
        (f"{prefix}-like", "like", None),
        (f"{prefix}-save", "save", None),
    ]


def test_an_upload_is_stored_once_and_fanned_out_to_followers(service, settings, world):
    counts = world.follows.groupby("followee_id").size()
    author = int(counts[counts <= settings.pull_follower_threshold].idxmax())
    follower = int(world.follows.loc[world.follows["followee_id"] == author, C.USER_ID].iloc[0])
    post_id = int(world.posts[C.POST_ID].max()) + 1000 + int(uuid.uuid4().int % 10**6)
    body = {"post_id": post_id, "author_id": author, "topic": 2, "media_kind": "photo"}
    body["media_bytes"] = 123_456
    r = httpx.post(f"{service}/v1/posts", headers=API, json=body, timeout=30)
    assert r.status_code == 202, r.text
    assert r.json() == {"post_id": post_id, "status": "created", "fanout": "queued"}
    again = httpx.post(f"{service}/v1/posts", headers=API, json=body, timeout=30)
    assert again.json()["status"] == "duplicate"
    clash = httpx.post(f"{service}/v1/posts", headers=API, json={**body, "topic": 3}, timeout=30)
    assert clash.status_code == 409 and str(post_id) in clash.json()["detail"]
    unknown = httpx.post(
        f"{service}/v1/posts", headers=API, json={**body, "author_id": 987654321}, timeout=30
    )
    # A well-formed upload naming an author who does not exist: 404, like an unknown reader.
    assert unknown.status_code == 404, unknown.text
    assert "author_id 987654321" in unknown.json()["detail"]

    cluster, session = connect(settings)
    # Buckets follow the stored creation time, not the clock: a test that spans midnight
    # still looks where the post went.
    stored = session.execute("SELECT created_at FROM posts_by_id WHERE post_id = %s", (post_id,))
    created = stored.one().created_at
    day = day_bucket(created)
    try:

        def landed() -> bool:
            rows = session.execute(
                "SELECT post_id FROM feed_by_user WHERE user_id = %s LIMIT 50", (follower,)
            )
            return post_id in {r.post_id for r in rows}

        wait_until(landed, timeout=15, what="the upload to reach a follower's timeline")
        by_author = session.execute(
            "SELECT post_id, created_at FROM posts_by_author WHERE author_id = %s AND day = %s",
            (author, day),
        )
        mine = [r for r in by_author if r.post_id == post_id]
    finally:  # leave the world as the other tests know it
        session.execute("DELETE FROM posts_by_id WHERE post_id = %s", (post_id,))
        session.execute(
            "DELETE FROM posts_by_author WHERE author_id = %s AND day = %s AND created_at = %s "
            "AND post_id = %s",
            (author, day, created, post_id),
        )
        created_ms = int(created.replace(tzinfo=UTC).timestamp() * 1000)
        for f in world.follows.loc[world.follows["followee_id"] == author, C.USER_ID]:
            session.execute(
                "DELETE FROM feed_by_user WHERE user_id = %s AND created_ms = %s AND post_id = %s",
                (int(f), created_ms, post_id),
            )
        cluster.shutdown()
    assert len(mine) == 1


@pytest.mark.slow
def test_the_service_follows_champion_live_without_failing_a_request(service, settings, world):
    """On models of this test's own (the session's @champion never moves), served by the
    session's feed app redeployed for the test and back again afterwards."""
    with own_models(settings, "live") as own, served_as(settings, own):
        _follows_champion_live(service, own, world)


def _follows_champion_live(service: str, own, world) -> None:
    from mlflow import MlflowClient

    from pipelines.steps import train
    from training.heavy import HeavyParams

    user = _reader(world, own)
    before = _feed(service, user).json()["model_version"]
    seen: list[tuple[int, str, str]] = []
    stop = threading.Event()

    def flow() -> None:
        with httpx.Client(headers=API, timeout=30) as c:
            while not stop.is_set():
                r = c.get(f"{service}/v1/feed/{user}", params={"limit": 5})
                seen.append((r.status_code, r.headers.get("x-model-version", ""), r.text))
                time.sleep(0.1)  # pacing, not waiting: ~10 requests/s during the switch

    client = MlflowClient(own.mlflow_tracking_uri, own.mlflow_tracking_uri)
    t = threading.Thread(target=flow, daemon=True)
    t.start()
    try:
        new = train(own, alias=None, heavy_params=HeavyParams(epochs=2))
        client.set_registered_model_alias(own.model_name, own.model_alias, new.light.version)
        client.set_registered_model_alias(own.heavy_model_name, own.model_alias, new.heavy.version)
        label = f"{own.model_name}/{new.light.version}+{own.heavy_model_name}/{new.heavy.version}"
        wait_until(
            lambda: seen and seen[-1][1] == label,
            timeout=60,
            interval=0.5,
            what=f"the service to answer with {label}",
        )
    finally:
        stop.set()
        t.join(30)
    assert len(seen) > 10
    assert all(code == 200 for code, _, _ in seen), [c for c, _, _ in seen if c != 200]
    versions = {v for _, v, _ in seen}
    assert versions == {before, label}  # never a mixed or third version
    for _, header, text in seen:
        assert f'"model_version":"{header}"' in text  # the body names the header's version


def test_redis_down_serves_default_features_and_recovers(service, settings, world):
    from stack import redis as stack_redis

    user = _reader(world, settings)
    first = _feed(service, user, params={"limit": 5}).json()
    assert first["degraded"] == [] and first["next_cursor"]
    if not stack_redis.down(settings):
        pytest.fail(f"the suite's Redis on {settings.redis_port} was not started by its stack")
    try:
        r = _feed(service, user)
        assert r.status_code == 200
        assert "features" in r.json()["degraded"] and r.json()["items"]
        # Page 2 of a session Redis held: a fresh first page, said so, never a 5xx.
        r = _feed(service, user, params={"limit": 5, "cursor": first["next_cursor"]})
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["session"], body["page"], body["next_cursor"]) == ("restarted", 0, None)
        assert {"features", "session"} <= set(body["degraded"]) and body["items"]
    finally:
        stack_redis.up(settings)
    wait_until(
        lambda: _feed(service, user).json()["degraded"] == [],
        timeout=10,
        interval=0.5,
        what="the features flag to clear after Redis came back",
    )


@pytest.mark.slow
def test_cassandra_down_serves_the_cached_page_and_recovers(service, settings, world):
    from stack import cassandra as stack_cassandra

    user = _reader(world, settings)
    served = _feed(service, user, params={"limit": 8}).json()
    assert served["degraded"] == [] and served["next_cursor"]
    page = [i["post_id"] for i in served["items"]]
    stranger = next(int(u) for u in reversed(world.users[C.USER_ID].tolist()) if u != user)
    rc = cache.client(settings)
    try:  # the page cache is written off the response path: wait until it holds this page
        wait_until(
            lambda: (
                [i.post_id for i in cache.load_items(rc.get(cache.page_key(settings, user)))][
                    : len(page)
                ]
                == page
            ),
            timeout=10,
            what="the served page in the page cache",
        )
        # A stranger has no page cached, whichever tests served whom before this one.
        rc.delete(cache.page_key(settings, stranger))
        # Neither has a Redis copy of their context or timeline, which would let a first page
        # be ranked with Cassandra down (the fallback is what is tested here).
        for u in (user, stranger):
            rc.delete(cache.context_key(settings, u), cache.timeline_key(settings, u))
    finally:
        rc.close()
    if not stack_cassandra.down(settings):
        pytest.fail("Cassandra was not started by this project's stack: cannot stop it")
    try:
        r = _feed(service, user, params={"limit": 8})
        assert r.status_code == 200
        body = r.json()
        assert body["degraded"] == ["candidates"]
        assert [i["post_id"] for i in body["items"]] == [i["post_id"] for i in served["items"]]
        other = _feed(service, stranger).json()
        assert other["degraded"][:2] == ["candidates", "popular"] and other["items"]
        # Page 2 of the session comes from Redis, with no candidate read at all.
        r = _feed(service, user, params={"limit": 8, "cursor": served["next_cursor"]})
        assert r.status_code == 200, r.text
        nxt = r.json()
        assert (nxt["session"], nxt["page"]) == ("continued", 1) and nxt["items"]
        assert not set(page) & {i["post_id"] for i in nxt["items"]}
        assert "candidates" not in nxt["degraded"]
        # An upload is refused whole: a 503, and not one blob stored.
        from tests.integration.test_uploads import _count_blobs, _post

        blobs = _count_blobs(settings)
        up = _post(service, samples.crop(samples.photos()[0], 2 / 3, 0.5), user)
        assert up.status_code == 503 and up.headers["Retry-After"], up.text
        assert _count_blobs(settings) == blobs
    finally:
        stack_cassandra.up(settings)
    wait_until(
        lambda: _feed(service, user).json()["degraded"] == [],
        timeout=60,
        interval=1.0,
        what="fresh pages after Cassandra's restart",
    )


def test_feed_metrics_reach_the_nodes_prometheus_endpoint(service, settings, world):
    import ray

    from serving.metrics import scrape_targets

    user = _reader(world, settings)
    for _ in range(3):
        assert _feed(service, user).status_code == 200
    targets = scrape_targets(ray.nodes())
    assert targets, "no node exports metrics"

    def scraped() -> str:
        text = "".join(httpx.get(f"http://{t}/metrics", timeout=5).text for t in targets)
        wanted = ("ray_feedcast_stage_seconds_bucket", 'stage="heavy"', 'code="200"')
        return text if all(w in text for w in wanted) else ""

    text = wait_until(  # the node agent exports on its own period
        scraped, timeout=45, interval=1.0, what="the feed's series at the node's metrics endpoint"
    )
    assert "ray_feedcast_requests_total" in text
    assert "ray_feedcast_candidates_bucket" in text


def test_overload_is_shed_with_503_and_retry_after_then_served_again(service, settings, world):
    user = _reader(world, settings)
    burst = 8 * (settings.serve_max_ongoing_requests + settings.serve_max_queued_requests)

    async def flood() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            headers={"X-API-Key": OVERLOAD_KEY},
            timeout=60,
            limits=httpx.Limits(max_connections=burst),
        ) as c:
            return await asyncio.gather(
                *(c.get(f"{service}/v1/feed/{user}", params={"limit": 5}) for _ in range(burst))
            )

    responses = asyncio.run(flood())
    codes = [r.status_code for r in responses]
    shed = [r for r in responses if r.status_code == 503]
    assert 503 in codes, codes
    assert set(codes) <= {200, 503}, codes  # shed or served; never a timeout or a crash
    assert 200 in codes, codes
    assert all(r.headers.get("retry-after") == "1" for r in shed)
    assert _feed(service, user).status_code == 200  # and the service is fine afterwards


def _listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket ``pid`` listens on, from /proc."""
    import ipaddress
    import os
    from pathlib import Path

    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = set()
    for table, size in (("tcp", 4), ("tcp6", 16)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            ip_hex, port_hex = fields[1].split(":")
            raw = bytes.fromhex(ip_hex)
            # /proc prints each 32-bit word of the address in host (little-endian) order.
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, size, 4))
            out.add((str(ipaddress.ip_address(words)), int(port_hex, 16)))
    return out


def test_the_ingress_is_haproxy_and_listens_on_loopback_only(service, settings):
    """HAProxy carries the requests (not Ray's Python proxy), and every port it opens — the
    API, its stats page, its Prometheus endpoint — is on 127.0.0.1 (stack/ingress.py rewrites
    the two that Ray's template binds on every interface)."""
    from pathlib import Path

    from stack.ingress import ingress_dir

    assert settings.serve_ingress == "haproxy"
    folder = str(ingress_dir(settings)).encode()
    pids = [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit()
        and (p / "comm").exists()
        and (p / "comm").read_text().strip() == "haproxy"
        and folder in (p / "cmdline").read_bytes()
    ]
    assert pids, "no HAProxy of this suite's head runs"
    sockets = set().union(*(_listening(pid) for pid in pids))
    ports = {port for _, port in sockets}
    wanted = {settings.serve_port, settings.haproxy_stats_port, settings.haproxy_metrics_port}
    assert wanted <= ports, sockets
    assert {addr for addr, _ in sockets} == {"127.0.0.1"}, sockets
    stats = httpx.get(f"http://127.0.0.1:{settings.haproxy_stats_port}/stats", timeout=5)
    assert stats.status_code == 200


def test_replicas_start_yielding_the_cpu_and_serve_at_full_priority(service, settings):
    """The replicas got the startup hook (serving/startup.py) and, ready, serve at the priority
    their raylet gave them, in every thread."""
    import os
    from pathlib import Path

    import ray

    from serving import startup
    from stack import ray_head

    session = ray._private.worker._global_node.get_session_dir_path()
    found = {}
    for pid in ray_head.replica_pids(session):
        raylet = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        found[pid] = (env, os.getpriority(os.PRIO_PROCESS, raylet))
    assert found, "no feed replica of this session's Ray found"
    for pid, (env, raylet_nice) in found.items():
        assert f"{startup.ENV}={settings.serve_startup_nice}".encode() in env
        assert set(startup.nice_of_threads(pid)) == {raylet_nice}, pid
