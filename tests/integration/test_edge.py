"""The CDN edge (nginx) in front of the media origin, and the warmers, against the real stack.

The session's stack fixture starts the suite's own origin (reading the test keyspace) and
edge (a cache of its own, empty at start) on the test ports.
"""

import asyncio
import contextlib
import random
import socket
import threading
from datetime import UTC, datetime

import httpx
import pytest

from core.db import connect
from core.settings import Settings
from core.statements import Statements
from media import objects as media
from media.objects import served_bytes
from media.origin import create_app
from prefetch.warm import EdgeWarmer
from stack import local, nginx, origin

pytestmark = pytest.mark.integration

PHOTO_BYTES, VIDEO_BYTES = 250_000, 4_000_000


@pytest.fixture(scope="module")
def fresh(settings: Settings) -> dict[str, int]:
    """A photo and a video with ids no other test uses: their objects are not at the edge yet."""
    base = 10**15 + random.randrange(10**12)
    posts = {"photo": (base, PHOTO_BYTES), "video": (base + 1, VIDEO_BYTES)}
    cluster, session = connect(settings)
    try:
        stmts = Statements(session, settings)
        now = datetime.now(UTC)
        for kind, (post_id, size) in posts.items():
            session.execute(stmts.insert_post, (post_id, 1, now, 0, kind, size), timeout=10)
    finally:
        cluster.shutdown()
    return {kind: post_id for kind, (post_id, _) in posts.items()}


@pytest.fixture(scope="module")
def edge(settings: Settings):
    with httpx.Client(base_url=nginx.url(settings), timeout=10) as c:
        yield c


def origin_stats(settings: Settings) -> dict[str, int]:
    return httpx.get(f"{origin.url(settings)}/stats", timeout=5).json()


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_first_get_is_a_miss_from_the_origin_and_the_second_a_hit_from_the_edge(
    settings, fresh, edge
):
    path = media.path(fresh["photo"], "full")
    size = served_bytes(PHOTO_BYTES, settings.media_scale)
    before = origin_stats(settings)["requests"]

    first = edge.get(path)
    assert first.status_code == 200, first.text
    assert first.headers["X-Cache-Status"] == "MISS"
    assert origin_stats(settings)["requests"] == before + 1
    assert int(first.headers["Content-Length"]) == size == len(first.content)
    assert first.headers["Content-Type"] == "image/jpeg"
    assert first.headers["Cache-Control"] == "public, max-age=86400"

    second = edge.get(path)
    assert second.headers["X-Cache-Status"] == "HIT"
    assert second.content == first.content
    assert second.headers["ETag"] == first.headers["ETag"]
    assert origin_stats(settings)["requests"] == before + 1


def test_a_video_stream_is_mp4_and_its_poster_a_jpeg_of_the_thumbnail_size(settings, fresh, edge):
    post_id = fresh["video"]
    full = edge.get(media.path(post_id, "full"))
    assert full.headers["Content-Type"] == "video/mp4"
    assert len(full.content) == served_bytes(VIDEO_BYTES, settings.media_scale)
    thumb = edge.get(media.path(post_id, "thumb"))
    assert thumb.headers["Content-Type"] == "image/jpeg"
    expected = served_bytes(
        media.variant_bytes(post_id, VIDEO_BYTES, "thumb"), settings.media_scale
    )
    assert len(thumb.content) == expected


def test_an_unknown_post_is_404_every_time_and_never_cached(settings, edge):
    path = media.path(10**16 + random.randrange(10**12), "thumb")
    before = origin_stats(settings)["not_found"]
    for _ in range(2):
        r = edge.get(path)
        assert r.status_code == 404
        assert r.headers["X-Cache-Status"] == "MISS"
    assert origin_stats(settings)["not_found"] == before + 2


@pytest.mark.parametrize(
    ("path", "says"),
    [("/media/1/huge", "unknown media variant"), ("/media/abc/thumb", "post id must be")],
)
def test_a_bad_variant_or_post_id_is_400_with_a_message(edge, path, says):
    r = edge.get(path)
    assert r.status_code == 400
    assert says in r.text


def test_warmed_objects_are_hits_on_demand_and_the_origin_is_not_asked_again(settings, world):
    post_ids = world.posts["post_id"].sample(10, random_state=3).tolist()
    paths = [media.path(p, v) for p in post_ids for v in media.VARIANTS]
    with EdgeWarmer(settings) as warmer:
        first = warmer.warm(paths)
        assert (first.requested, first.failed) == (len(paths), 0)
        assert first.warmed + first.already == len(paths)
        assert first.bytes > 0
        again = warmer.warm(paths)
    assert (again.already, again.warmed) == (len(paths), 0)

    before = origin_stats(settings)["requests"]
    with httpx.Client(base_url=nginx.url(settings), timeout=10) as c:
        statuses = [c.get(p).headers["X-Cache-Status"] for p in paths]
    assert statuses == ["HIT"] * len(paths)
    assert origin_stats(settings)["requests"] == before


def test_submit_warms_in_the_background_and_drops_what_the_queue_cannot_hold(settings, world):
    small = settings.model_copy(update={"prefetch_queue_size": 1, "prefetch_concurrency": 1})
    paths = [media.path(p, "thumb") for p in world.posts["post_id"].tolist()[:50]]
    with EdgeWarmer(small) as warmer:
        queued = warmer.submit(paths)
        assert warmer.drain(timeout_s=30)
        stats = warmer.stats()
    assert queued + stats.dropped == len(paths)
    assert stats.dropped > 0
    assert (stats.done.requested, stats.done.failed, stats.pending) == (queued, 0, 0)


def test_a_dead_edge_fails_every_path_without_raising(settings):
    paths = [media.path(i, "thumb") for i in range(1, 9)]
    with EdgeWarmer(settings, base_url=f"http://127.0.0.1:{dead_port()}") as warmer:
        result = warmer.warm(paths)
    assert (result.requested, result.failed, result.warmed, result.already) == (8, 8, 0, 0)


def _silent_edge(sock: socket.socket, seen: dict[str, int], stop: threading.Event) -> None:
    """Accept connections, read what they send, never answer; count connections and the most
    open at once (a connection is closed when the client gives up on it)."""
    sock.settimeout(0.02)
    conns: list[socket.socket] = []
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            conn, _ = sock.accept()
            conn.setblocking(False)
            conns.append(conn)
            seen["accepted"] += 1
        still = []
        for c in conns:
            try:
                if c.recv(65536) == b"":
                    c.close()
                    continue
            except BlockingIOError:
                pass
            still.append(c)
        conns = still
        seen["most_open"] = max(seen["most_open"], len(conns))
    for c in conns:
        c.close()


def test_an_edge_that_never_answers_gets_at_most_the_concurrency_in_flight(settings):
    s = settings.model_copy(update={"prefetch_timeout_s": 0.3, "prefetch_concurrency": 4})
    seen = {"accepted": 0, "most_open": 0}
    stop = threading.Event()
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        server = threading.Thread(target=_silent_edge, args=(silent, seen, stop), daemon=True)
        server.start()
        try:
            with EdgeWarmer(s, base_url=f"http://127.0.0.1:{silent.getsockname()[1]}") as warmer:
                result = warmer.warm([media.path(i, "full") for i in range(1, 9)])
        finally:
            stop.set()
            server.join(timeout=5)
    assert result.failed == 8  # every path ended by its timeout, none raised
    assert seen["accepted"] == 8  # one connection per path: no retries
    assert 1 < seen["most_open"] <= 4  # concurrent, and never past prefetch_concurrency


def test_an_origin_whose_keyspace_does_not_exist_says_503_not_500(settings):
    s = settings.model_copy(update={"cassandra_keyspace": "feedcast_absent_keyspace"})

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(s))
        async with httpx.AsyncClient(transport=transport, base_url="http://origin") as c:
            return await c.get(media.path(1, "thumb"))

    r = asyncio.run(get())
    assert (r.status_code, r.headers["Retry-After"]) == (503, "1")


def _listeners(port: int) -> set[str]:
    """Local addresses listening on ``port``, from /proc/net/tcp{,6} (state 0A = LISTEN)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                local_addr, state = line.split()[1], line.split()[3]
                addr, hex_port = local_addr.split(":")
                if state == "0A" and int(hex_port, 16) == port:
                    found.add(addr)
    return found


def test_edge_and_origin_listen_on_loopback_only(settings):
    assert _listeners(settings.edge_port) == {"0100007F"}  # 127.0.0.1, not 0.0.0.0 or ::
    assert _listeners(settings.origin_port) == {"0100007F"}


def test_stack_status_shows_the_origin_and_the_edge(settings):
    status = local.status(settings)
    for name in ("origin", "edge"):
        assert status[name]["healthy"], status
        assert status[name]["pid"] is not None, status


def test_with_the_origin_down_the_edge_serves_what_it_holds_and_502_for_the_rest(
    settings, fresh, edge
):
    stored = media.path(fresh["photo"], "thumb")
    assert edge.get(stored).status_code == 200
    if not origin.down(settings):
        pytest.skip("the origin was not started by this session; not stopping it")
    try:
        r = edge.get(stored)
        assert (r.status_code, r.headers["X-Cache-Status"]) == (200, "HIT")
        never_fetched = edge.get(media.path(10**16 + random.randrange(10**12), "full"))
        assert never_fetched.status_code == 502
    finally:
        origin.up(settings)
