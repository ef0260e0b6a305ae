"""The world's real photos, as the demo makes them: the posts of a reader's first page get
renditions of a shipped photo (cropped per post), the feed's items carry them, and the contact
sheet of that page, opened in headless Chromium, loads every photo through the edge."""

from __future__ import annotations

import io
import time
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image

from core.db import connect
from core.statements import Statements
from pipelines import contact_sheet, world_media
from stack import browser
from tests.integration.test_serving import _feed, _reader
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


def _drawn(page: dict) -> set[int]:
    return {
        i["post_id"] for i in page["items"] if any("/media/r/" in r["url"] for r in i["renditions"])
    }


def _reader_with_photos(service, world, settings) -> tuple[int, dict, set[int]]:
    """A reader whose first page has photo posts (video posts keep simulated media)."""
    readers = [_reader(world, settings), *world.users["user_id"].tolist()[:40]]
    for user in readers:
        page = _feed(service, int(user), params={"limit": 8}).json()
        photos = {i["post_id"] for i in page["items"] if i["media_kind"] == "photo"}
        third = page["items"][2]["media_kind"] if len(page["items"]) > 2 else None
        if len(photos) >= 2 and third == "photo":  # the prefetch warms position 2
            return int(user), page, photos
    raise AssertionError("no reader's first page has two photo posts, one at position 2")


def test_a_first_page_of_real_photos_loads_whole_in_a_browser(service, settings, world, tmp_path):
    user, first, photos = _reader_with_photos(service, world, settings)
    posts = [i["post_id"] for i in first["items"]]
    cluster, session = connect(settings)
    try:
        done = world_media.render_posts(settings, session, Statements(session, settings), posts)
        assert done.posts == len(photos)  # each at the widths it reaches, in three formats
        assert len(photos) * 3 <= done.renditions <= len(photos) * 3 * len(world_media.DEMO_WIDTHS)
        rendered_at = time.monotonic()
        again = world_media.render_posts(settings, session, Statements(session, settings), posts)
        assert again.posts == 0  # stored once
    finally:
        cluster.shutdown()
    # Each feed replica forgets what it read of these posts' media within takedown_refresh_s of
    # the render. Wait that out before reading pages: a replica that never read the posts shows
    # them at once, and another that read them before the render may not have caught up (a
    # first page from the second replica drew the simulated objects: CI of 2026-12-07).
    time.sleep(max(0.0, rendered_at + 2 * settings.takedown_refresh_s + 1 - time.monotonic()))

    def shown() -> dict | None:
        page = _feed(service, user, params={"limit": 8}).json()
        return page if _drawn(page) >= photos & {i["post_id"] for i in page["items"]} else None

    page = wait_until(shown, timeout=2 * settings.takedown_refresh_s + 10, what="stored media")
    item = next(i for i in page["items"] if i["post_id"] in photos)
    widths = {r["width"] for r in item["renditions"]}
    # the demo's widths the photo reaches, or its own width where it is narrower than them all
    assert widths and all(
        w in world_media.DEMO_WIDTHS or w < min(world_media.DEMO_WIDTHS) for w in widths
    )
    r = item["renditions"][0]
    got = httpx.get(r["url"], timeout=10)  # a real photo of the declared size, through the edge
    with Image.open(io.BytesIO(got.content)) as im:
        assert im.size == (r["width"], r["height"]) and len(got.content) == r["bytes"]

    # the prefetcher warms the stored rendition a client takes first, not a simulated object
    from tests.integration.test_prefetch_serving import _deep_scroller, _fetched_by_edge

    c = _deep_scroller(settings, user)
    warmed = _feed(service, user, params={"limit": 8}).json()["items"][2]
    if warmed["post_id"] in photos:
        first = urlsplit(warmed["renditions"][0]["url"]).path
        assert c**2 >= settings.prefetch_threshold and first.startswith("/media/r/")
        wait_until(lambda: _fetched_by_edge(settings, [first]), timeout=10, what=f"{first} warmed")

    sheet, drawn = contact_sheet.write(page, tmp_path / "sheet.html")
    assert drawn == len(_drawn(page)) >= 1
    assert browser.loaded(sheet) == (drawn, drawn)

    # the check can fail: a rendition the edge does not have is counted as not loaded
    broken = dict(page, items=[dict(i) for i in page["items"]])
    victim = next(i for i in broken["items"] if i["post_id"] in photos)
    victim["renditions"] = [
        dict(x, url=x["url"].rsplit("/", 1)[0] + "/" + "0" * 64 + ".jpg")
        for x in victim["renditions"]
    ]
    bad, n = contact_sheet.write(broken, tmp_path / "broken.html")
    assert browser.loaded(bad) == (n - 1, n)
