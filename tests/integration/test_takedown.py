"""DELETE /v1/posts/{id} on the real deployment: a taken-down upload leaves the follower's feed
(a retried page, a fresh first page, the whole scrolled session), its renditions leave the edge
(nginx's cache purged, the origin 404), its blobs are deleted after the grace period; bytes
another post shares stay; only the author may, and a second takedown is a no-op."""

from __future__ import annotations

import httpx
import pytest

from core.db import connect
from core.statements import Statements
from media import samples
from media.blobs import BlobStore, digest_of
from media.renditions import parse_name
from serving import uploads
from tests.integration.test_uploads import API, _author_with_followers, _post, _ready, _record
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


def _digest(url: str) -> str:
    parsed = parse_name(url.rsplit("/", 1)[1])
    assert parsed is not None, url
    return parsed[0]


def _delete(service: str, post_id: int, author: int) -> httpx.Response:
    return httpx.delete(
        f"{service}/v1/posts/{post_id}", headers=API, params={"author_id": author}, timeout=30
    )


def _scroll(service: str, user: int) -> tuple[set[int], list[tuple[str | None, set[int]]]]:
    """Every post of a fresh session of ``user``'s feed, and each page's cursor and posts."""
    seen: set[int] = set()
    pages: list[tuple[str | None, set[int]]] = []
    cursor = None
    for _ in range(30):
        params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        r = httpx.get(f"{service}/v1/feed/{user}", headers=API, params=params, timeout=30)
        assert r.status_code == 200, r.text
        posts = {i["post_id"] for i in r.json()["items"]}
        pages.append((cursor, posts))
        seen |= posts
        cursor = r.json()["next_cursor"]
        if not cursor:
            break
    return seen, pages


def test_a_takedown_leaves_feeds_and_the_edge_then_the_store(service, settings, world):
    author, follower = _author_with_followers(settings, world)
    photo = samples.crop(samples.photos()[1], aspect=1.25, scale=0.9)  # bytes no other test sends
    r = _post(service, photo, author)
    assert r.status_code == 202, r.text
    post_id = r.json()["post_id"]
    done = _ready(service, post_id)
    assert done["status"] == "ready", done
    urls = [x["url"] for x in done["renditions"]]
    for url in urls:  # cached at the edge: the second fetch is a HIT
        httpx.get(url, timeout=10)
        assert httpx.get(url, timeout=10).headers["X-Cache-Status"] == "HIT"

    def shown() -> list[tuple[str | None, set[int]]] | None:
        seen, pages = _scroll(service, follower)
        return pages if post_id in seen else None

    pages = wait_until(shown, timeout=30, what="the upload in the follower's feed")
    cursor_of_its_page = next(c for c, posts in pages if post_id in posts)

    assert _delete(service, post_id, author + 1).status_code == 403
    assert _delete(service, 2**62, author).status_code == 404
    gone = _delete(service, post_id, author)
    assert gone.status_code == 200, gone.text
    body = gone.json()
    assert body["status"] == "removed" and body["already"] is False
    assert body["blobs_trashed"] == len(urls) + 1  # the renditions and the original
    assert body["purged"] == len(urls) and body["purge_failed"] == 0

    # off the feed: the page it was on, retried; and a whole fresh session
    params = {"limit": 100, **({"cursor": cursor_of_its_page} if cursor_of_its_page else {})}

    def off_its_page() -> bool:
        r = httpx.get(f"{service}/v1/feed/{follower}", headers=API, params=params, timeout=30)
        return r.status_code == 200 and post_id not in {i["post_id"] for i in r.json()["items"]}

    wait_until(off_its_page, timeout=2 * settings.takedown_refresh_s + 5, what="off its page")
    assert post_id not in _scroll(service, follower)[0]

    # off the edge: purged, and the origin no longer has it
    for url in urls:
        r = httpx.get(url, timeout=10)
        assert r.status_code == 404, (url, r.status_code)
    status = httpx.get(f"{service}/v1/uploads/{post_id}", headers=API, timeout=10).json()
    assert status["status"] == "removed" and status["renditions"] == []

    again = _delete(service, post_id, author)
    assert again.status_code == 200 and again.json()["already"] is True

    # the grace period over, the sweeper deletes the blobs for good
    blobs = BlobStore(settings.blob_store_url)
    digests = [_digest(u) for u in urls]
    assert all(blobs.fs.exists(blobs.trash_path(d)) for d in digests)
    wait_until(
        lambda: not any(blobs.fs.exists(blobs.trash_path(d)) for d in digests),
        timeout=settings.takedown_grace_s + 4 * settings.upload_sweep_s + 10,
        what="the trashed blobs deleted",
    )
    assert not any(blobs.exists(d) for d in digests)


def test_bytes_another_post_shares_stay(service, settings, world):
    """Two authors upload the same photo: two posts sharing their renditions' blobs. One takes
    theirs down: the other's renditions are still served."""
    first, second = _author_with_followers(settings, world)
    photo = samples.crop(samples.photos()[0], aspect=0.8, scale=0.85)
    kept = _post(service, photo, first).json()["post_id"]
    removed = _post(service, photo, second).json()["post_id"]
    assert kept != removed
    urls = [x["url"] for x in _ready(service, kept)["renditions"]]
    assert _ready(service, removed)["status"] == "ready"

    body = _delete(service, removed, second).json()
    assert body["blobs_trashed"] == 0 and body["purged"] == 0
    assert all(httpx.get(u, timeout=10).status_code == 200 for u in urls)
    assert (
        httpx.get(f"{service}/v1/uploads/{kept}", headers=API, timeout=10).json()["status"]
        == "ready"
    )


@pytest.mark.parametrize("when", ["rendering", "announcing"])
def test_a_takedown_while_the_upload_is_processed_wins(service, settings, world, when):
    """DELETE lands while a worker holds the job (here: this test's worker, on the real tables,
    blob store and edge; the deployment's sweeper leaves a job whose lease runs): the job ends
    `removed`, not `ready`; what the worker stored is out of the store; no feed shows it."""
    author, follower = _author_with_followers(settings, world)
    data = samples.crop(samples.photos()[2], aspect=1.0, scale=0.7 if when == "rendering" else 0.65)
    cluster, session = connect(settings)
    try:
        blobs = BlobStore(settings.blob_store_url)
        post_id, original, jobs = _record(settings, session, author, data, lease_s=600)
        deleted: list[httpx.Response] = []

        def take_down() -> None:
            deleted.append(_delete(service, post_id, author))

        def render_then(engine: str, raw: bytes, floor: float) -> uploads.Rendered:
            out = uploads.render(engine, raw, floor)
            if when == "rendering":
                take_down()
            return out

        class Worker(uploads.Processor):
            def _announce(self, job, stored):  # the takedown between the check and the end
                take_down()
                super()._announce(job, stored)

        cls = Worker if when == "announcing" else uploads.Processor
        worker = cls(settings, session, Statements(session, settings), blobs, render_in=render_then)
        assert worker.run(post_id, first=True) == "removed"
        assert deleted and deleted[0].status_code == 200, deleted[0].text
        # The same bytes the worker stored (the encoders are deterministic).
        rendered = {
            digest_of(r.data)
            for r in uploads.render(settings.media_engine, data, settings.media_ssim_floor)[0]
        }
        # While rendering the takedown finds the original alone; while announcing, the
        # renditions too, and the worker's own withdrawal finds nothing more to do.
        trashed = 1 if when == "rendering" else 1 + len(rendered)
        assert deleted[0].json()["blobs_trashed"] == trashed

        status = httpx.get(f"{service}/v1/uploads/{post_id}", headers=API, timeout=10).json()
        assert status["status"] == "removed" and status["renditions"] == []
        assert post_id not in jobs.pending()
        assert rendered and not any(blobs.exists(d) for d in rendered)
        refs = "SELECT post_id FROM blob_refs WHERE sha256 = %s AND post_id = %s"
        assert not any(session.execute(refs, (d, post_id)).one() for d in rendered | {original})
        assert not blobs.exists(original)
        wait_until(
            lambda: post_id not in _scroll(service, follower)[0],
            timeout=2 * settings.takedown_refresh_s + 5,
            what="the post off the follower's feed",
        )
    finally:
        cluster.shutdown()


def test_replicas_reread_the_takedowns_only_when_the_epoch_moves(settings, world):
    """A replica's copy of posts_removed is read again when a takedown bumped the shared epoch
    (another replica's, through real Redis), when the epoch cannot be read, and at least every
    full_refresh_s; not on every turn of its thread."""
    import time

    from core import cache
    from core.breaker import Breaker
    from serving.feed import RedisEpoch
    from serving.takedown import RemovedPosts

    cluster, session = connect(settings)
    r = cache.client(settings)
    key = f"{cache.takedown_epoch_key(settings)}:test-{time.time_ns()}"
    try:
        mine = RemovedPosts(
            lambda: session, 0.1, 5.0, epoch=RedisEpoch(r, key, Breaker()), full_refresh_s=60
        )
        theirs = RemovedPosts(lambda: session, 0.1, 5.0, epoch=RedisEpoch(r, key, Breaker()))
        assert mine.tick() and mine.reads == 1  # the first turn reads
        assert not mine.tick() and not mine.tick() and mine.reads == 1  # nothing changed
        theirs.add(2**60 + 17)  # a takedown on the other replica bumps the epoch
        assert theirs.ids().tolist() == [2**60 + 17]  # off its own pages at once
        assert mine.tick() and mine.reads == 2
        assert not mine.tick()
        r.delete(key)  # Redis lost the counter (a restart): read again, then quiet
        assert mine.tick() and not mine.tick()
        mine.full_refresh_s = 0.2
        time.sleep(0.25)
        assert mine.tick() and mine.reads == 4  # at least every full_refresh_s

        dead = cache.client(settings.model_copy(update={"redis_port": 1}))
        blind = RemovedPosts(
            lambda: session, 0.1, 5.0, epoch=RedisEpoch(dead, key, Breaker()), full_refresh_s=60
        )
        assert blind.tick() and blind.tick() and blind.reads == 2  # unreadable: every turn
    finally:
        r.delete(key)
        cluster.shutdown()
