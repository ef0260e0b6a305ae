"""Stored renditions through the real edge: a phone photo carrying GPS is rendered, its objects
go to the blob store and Cassandra, and the local CDN edge (nginx) serves each from the origin
as the exact bytes declared, decodable, upright and without metadata."""

from __future__ import annotations

import hashlib
import io

import httpx
import pytest
from PIL import Image

from core.db import connect
from media import ids, images, samples
from media.blobs import BlobStore
from media.renditions import RenditionStore, rendition_url

pytestmark = pytest.mark.integration
PIL_FORMAT = {"jpeg": "JPEG", "webp": "WEBP", "avif": "AVIF"}


@pytest.fixture(scope="module")
def store(settings, world):
    cluster, session = connect(settings)
    yield RenditionStore(session, BlobStore(settings.blob_store_url))
    cluster.shutdown()


def test_a_phone_photo_is_served_by_the_edge_as_stored_and_without_its_gps(settings, store):
    sent = samples.as_phone_sends_it(samples.photos()[1], orientation=6)  # 640x427, rotated
    images.probe(sent, max_bytes=settings.upload_max_bytes, max_pixels=settings.upload_max_pixels)
    rendered, _ = images.render(images.PillowEngine(), sent, floor=settings.media_ssim_floor)
    post_id = ids.IdMaker(shard=1).next()
    stored = store.put(post_id, rendered)
    assert store.put(post_id, rendered) == stored  # processed twice: still one set
    listed = store.get(post_id)
    assert sorted(listed, key=str) == sorted(stored, key=str)
    assert {(s.variant, s.format) for s in listed} == {
        (f"w{w}", f) for w in (320, 150) for f in images.FORMATS
    }  # upright it is 427 wide: 640 would be an upscale

    with httpx.Client(base_url=settings.media_url, timeout=10) as edge:
        for s in listed:
            url = s.url(settings.media_url)
            r = edge.get(url)
            assert r.status_code == 200, (url, r.text)
            assert r.headers["content-type"] == images.CONTENT_TYPES[s.format]
            assert len(r.content) == s.bytes and hashlib.sha256(r.content).hexdigest() == s.sha256
            assert r.headers["etag"] == f'"{s.sha256}"'
            assert "immutable" in r.headers["cache-control"]
            with Image.open(io.BytesIO(r.content)) as im:
                assert im.format == PIL_FORMAT[s.format]
                assert im.size == (s.width, s.height) and s.height > s.width  # upright
                assert len(im.getexif()) == 0 and not im.getexif().get_ifd(0x8825)
            assert samples.CAMERA_MODEL.encode() not in r.content
            again = edge.get(url)
            assert again.headers["x-cache-status"] == "HIT" and again.content == r.content
            # a client that has the object revalidates to a 304 from the origin's ETag
            fresh = edge.get(url, headers={"If-None-Match": r.headers["etag"]})
            assert fresh.status_code == 304 and not fresh.content


def test_the_edge_answers_404_for_what_is_not_stored(settings, store):
    with httpx.Client(timeout=10) as edge:
        missing = rendition_url(settings.media_url, "0" * 64, "jpeg")
        assert edge.get(missing).status_code == 404
        for bad in ("x.jpg", "../../etc/passwd", f"{'a' * 64}.png", f"{'A' * 64}.jpg"):
            r = edge.get(f"{settings.media_url}/media/r/{bad}")
            assert r.status_code == 404, bad
        # a stored object asked for under another format's name is not served as that format
        jpeg = next(s for s in _any_stored(store) if s.format == "jpeg")
        assert edge.get(rendition_url(settings.media_url, jpeg.sha256, "avif")).status_code == 404


def _any_stored(store: RenditionStore):
    data = samples.crop(samples.photos()[0], 1.0, scale=0.5)
    rendered, _ = images.render(images.PillowEngine(), data, floor=0.9, fixed_quality=80)
    return store.put(ids.IdMaker(shard=2).next(), rendered)
