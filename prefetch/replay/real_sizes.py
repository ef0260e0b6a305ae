"""Real photo sizes for the trace replay: the bytes the media tier stores for a post's photo.

Each of a world's posts has its own photo (:func:`media.samples.photo_for`: one of the photos
installed packages ship, cropped per post). A photo post's object in the trace is what a phone's
feed draws first and the prefetcher warms: the widest rendition at the feed's widths, in its
smallest format (``serving/feed.py`` lists them so), rendered as the demo stores them
(:data:`media.images.FEED_WIDTHS`, :data:`media.images.FIXED_QUALITY`, no quality search).

A replay world has tens of thousands of photos; each takes up to a second to render. So the ``top``
most requested photos are rendered exactly, and every other photo takes the size of one of
those, picked by its post id: every photo size in the trace is then a real encode, and the
share of photo requests whose own photo was rendered is reported with the figures. Videos keep
their simulated sizes (the media tier has no video yet). Rendered sizes are cached in a JSON
file, keyed by post id under a stamp of the render settings.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from core.settings import Settings
from media import images, objects, samples
from simulator.trace import Trace

STAMP = f"v1 {images.FEED_WIDTHS} {sorted(images.FIXED_QUALITY.items())}"


def cache_file(s: Settings) -> Path:
    """Where the rendered sizes are kept between runs: under the data folder."""
    return (s.data_dir or s.home) / "replay" / "photo-sizes.json"


def photo_bytes(post_id: int) -> int:
    """The stored bytes of the rendition a feed draws first for the post's photo."""
    out, _ = images.render(
        images.engine("pillow"), samples.photo_for(post_id), floor=0.0,
        widths=images.FEED_WIDTHS, formats=tuple(images.FIXED_QUALITY),
        fixed_quality=images.FIXED_QUALITY,
    )  # fmt: skip
    widest = max(r.width for r in out)
    return min(len(r.data) for r in out if r.width == widest)


def rendered_sizes(
    post_ids: Iterable[int],
    *,
    cache: Path | None = None,
    workers: int | None = None,
    progress: Callable[[str], None] = lambda _m: None,
) -> dict[int, int]:
    """:func:`photo_bytes` of each post, rendered in ``workers`` processes; ``cache`` keeps
    them between runs."""
    wanted = [int(p) for p in dict.fromkeys(post_ids)]
    known: dict[int, int] = {}
    if cache is not None and cache.exists():
        stored = json.loads(cache.read_text())
        if stored.get("stamp") == STAMP:
            known = {int(k): int(v) for k, v in stored["sizes"].items()}
    todo = [p for p in wanted if p not in known]
    if todo:
        progress(f"rendering {len(todo):,} photos ({len(wanted) - len(todo):,} cached)")
        with ProcessPoolExecutor(workers or os.cpu_count() or 1) as pool:
            known |= dict(zip(todo, pool.map(photo_bytes, todo, chunksize=8), strict=True))
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".part")
            tmp.write_text(json.dumps({"stamp": STAMP, "sizes": known}))
            tmp.replace(cache)
    return {p: known[p] for p in wanted}


def photo_posts(trace: Trace) -> tuple[np.ndarray, np.ndarray]:
    """The trace's photo posts, most requested first, and their request counts."""
    photos = np.unique(trace.page_post[~trace.page_video])
    post = objects.post_of(trace.obj)
    asked = post[np.isin(post, photos)]
    ids, counts = np.unique(asked, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    return ids[order], counts[order]


def with_sizes(trace: Trace, sizes: dict[int, int]) -> tuple[Trace, dict[str, Any]]:
    """``trace`` with every photo's size real: a rendered post its own, any other photo one of
    the rendered sizes picked by its post id. Returns the trace and what was done."""
    if not sizes:
        raise ValueError("no rendered photo sizes")
    ids, counts = photo_posts(trace)
    keys = np.array(sorted(sizes), np.int64)
    vals = np.array([sizes[k] for k in keys], np.int64)

    def size_of(posts: np.ndarray) -> np.ndarray:
        at = np.clip(np.searchsorted(keys, posts), 0, len(keys) - 1)
        own = keys[at] == posts
        return np.where(own, vals[at], vals[posts % len(vals)])

    post = objects.post_of(trace.obj)
    photo_req = np.isin(trace.obj, objects.object_id(ids, "full"))
    size = trace.size.copy()
    size[photo_req] = size_of(post[photo_req])
    page_photo = ~trace.page_video
    full = trace.page_full_bytes.copy()
    full[page_photo] = size_of(trace.page_post[page_photo])
    rendered = np.isin(ids, keys)
    n = max(1, int(photo_req.sum()))
    done = {
        "photo_sizes": "real (the feed's first rendition, FIXED_QUALITY at FEED_WIDTHS)",
        "photos": len(ids),
        "photos_rendered": int(rendered.sum()),
        "photo_requests_own_size": float(counts[rendered].sum() / max(1, counts.sum())),
        "photo_mean_bytes_simulated": float(trace.size[photo_req].sum() / n),
        "photo_mean_bytes_real": float(size[photo_req].sum() / n),
    }
    return replace(trace, size=size, page_full_bytes=full), done


def real_photos(
    trace: Trace,
    top: int,
    *,
    cache: Path | None = None,
    progress: Callable[[str], None] = lambda _m: None,
) -> tuple[Trace, dict[str, Any]]:
    """``trace`` with real photo sizes, the ``top`` most requested photos rendered."""
    ids, _ = photo_posts(trace)
    sizes = rendered_sizes(ids[: max(1, top)].tolist(), cache=cache, progress=progress)
    return with_sizes(trace, sizes)
