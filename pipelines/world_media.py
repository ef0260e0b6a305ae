"""Real photos for the simulated world's posts, where they are seen.

A world has tens of thousands of posts; rendering all of them with the upload tier's quality
search would take hours on a laptop. The demo renders only the posts its readers' first pages
show, at the widths a phone's feed draws (``DEMO_WIDTHS``) and one fixed quality per format
(the quality search is the benchmark's business: ``bench/media.py``). Each post gets its own
photo (``media.samples.photo_for``: one of the photos installed packages ship, cropped to a
feed shape at a place drawn from the post id), its renditions go to the blob store and
``renditions_by_post`` as an upload's do, and ``posts_by_id.stored_media`` marks the post, so
the feed's items carry the stored renditions from then on (the replicas notice within
``takedown_refresh_s``: ``core.cache.media_epoch_key``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from cassandra.cluster import Session

from core import cache
from core.settings import Settings
from core.statements import Statements
from media import images, samples
from media.blobs import BlobStore
from media.renditions import RenditionStore

log = logging.getLogger("feedcast.pipelines.world_media")

DEMO_WIDTHS = images.FEED_WIDTHS  # a phone's feed column and its thumbnail grid
DEMO_QUALITY = images.FIXED_QUALITY  # near the search's typical choices


@dataclass(frozen=True)
class Rendered:
    posts: int  # posts that got renditions
    skipped: int  # not photos (video stays simulated), unknown, or already stored
    renditions: int
    bytes: int
    seconds: float


def render_posts(
    settings: Settings,
    session: Session,
    stmts: Statements,
    post_ids: Iterable[int],
    *,
    widths: tuple[int, ...] = DEMO_WIDTHS,
) -> Rendered:
    """Store renditions of each photo post among ``post_ids`` that has none yet."""
    t0 = time.perf_counter()
    store = RenditionStore(
        session, BlobStore(settings.blob_store_url), settings.cassandra_request_timeout_s
    )
    mark = session.prepare("UPDATE posts_by_id SET stored_media = ? WHERE post_id = ?")
    eng = images.engine(settings.media_engine)
    done = skipped = n = size = 0
    for post_id in dict.fromkeys(post_ids):
        row = session.execute(stmts.get_post, (post_id,), timeout=10).one()
        if row is None or row.media_kind != "photo" or row.stored_media:
            skipped += 1
            continue
        out, _ = images.render(  # one fixed quality per format: no search
            eng, samples.photo_for(post_id), floor=settings.media_ssim_floor, widths=widths,
            formats=tuple(DEMO_QUALITY), fixed_quality=DEMO_QUALITY,
        )  # fmt: skip
        stored = store.put(post_id, out)
        session.execute(mark, (len(stored), post_id), timeout=10)
        done, n, size = done + 1, n + len(stored), size + sum(s.bytes for s in stored)
    if done:  # every replica forgets what it knew of these posts' media
        cache.client(settings).incr(cache.media_epoch_key(settings))
    return Rendered(done, skipped, n, size, time.perf_counter() - t0)
