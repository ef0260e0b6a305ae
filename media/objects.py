"""Media objects: which variants a post has, how big each is, and its URL at the edge.

Pure functions shared by the simulator's request trace, the prefetch planner and the media
origin, so the three agree on what an object is. A post has two objects:

- ``thumb``: the small feed image (a photo's feed rendition, a video's poster frame);
- ``full``: the full-resolution photo, or the video stream.

A feed view of a photo loads its ``full`` object (feed photos are shown full width); a feed
view of a video loads its ``thumb`` at once and its ``full`` only if the user stays long enough
for autoplay. That is the choice the planner makes per item: thumbnail or full.
"""

from __future__ import annotations

from typing import Any

import numpy as np

VARIANTS = ("thumb", "full")
AUTOPLAY_S = 1.0  # a video's stream is requested once it has been on screen this long
THUMB_MIN, THUMB_SPAN = 12_000, 36_000  # thumbnails: 12–48 kB, deterministic per post


def thumb_bytes(post_id: np.ndarray | int) -> np.ndarray | int:
    """Bytes of a post's thumbnail: deterministic in the post id (a hash, not a draw)."""
    h = (np.asarray(post_id, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(40)
    out = THUMB_MIN + (h % np.uint64(THUMB_SPAN)).astype(np.int64)
    return int(out) if np.ndim(post_id) == 0 else out


def variant_bytes(post_id: int, media_bytes: int, variant: str) -> int:
    """Size of one object; ``full`` is the post's ``media_bytes``."""
    if variant == "full":
        return int(media_bytes)
    if variant == "thumb":
        return int(thumb_bytes(post_id))
    raise ValueError(f"unknown media variant {variant!r} (expected one of {VARIANTS})")


def object_id(post_id: np.ndarray | int, variant: str) -> np.ndarray | int:
    """A dense integer id per object: ``2 * post_id + (variant == 'full')``."""
    return np.asarray(post_id, dtype=np.int64) * 2 + (1 if variant == "full" else 0)


def post_of(object_id: np.ndarray) -> np.ndarray:
    """The post of each object id (:func:`object_id`'s inverse, either variant)."""
    return np.asarray(object_id, dtype=np.int64) // 2


def path(post_id: int, variant: str) -> str:
    """The object's path at the edge and at the origin."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown media variant {variant!r} (expected one of {VARIANTS})")
    return f"/media/{int(post_id)}/{variant}"


def refresh_path(post_id: int, variant: str) -> str:
    """The edge's refresh-if-cached URL of an object (HEAD it: never fetched from the origin)."""
    return "/refresh" + path(post_id, variant)


def served_bytes(size: int, scale: float) -> int:
    """Bytes the origin sends for an object of ``size`` simulated bytes (at least one)."""
    return max(1, round(size * scale))


def content_type(media_kind: str, variant: str) -> str:
    """A video's stream is mp4; everything else (photos, thumbnails, posters) is jpeg."""
    return "video/mp4" if media_kind == "video" and variant == "full" else "image/jpeg"


# Nominal pixel sizes of the simulated renditions (4:5 feed photos, 9:16 video), until the media
# tier stores real ones: the response shape stays the same when it does.
DIMENSIONS = {
    ("photo", "thumb"): (320, 400),
    ("photo", "full"): (1080, 1350),
    ("video", "thumb"): (360, 640),
    ("video", "full"): (1080, 1920),
}


def renditions(
    post_id: int, media_kind: str, media_bytes: int, *, base_url: str, scale: float
) -> list[dict[str, Any]]:
    """What a client draws a post from: one entry per variant, with the URL at the edge and
    the byte length the edge answers with (the object the prefetcher warms); ``[]`` when the
    post's media is unknown."""
    if media_kind not in ("photo", "video") or media_bytes <= 0:
        return []
    out = []
    for v in VARIANTS:
        w, h = DIMENSIONS[(media_kind, v)]
        out.append(
            {
                "variant": v,
                "format": content_type(media_kind, v).split("/")[1],
                "width": w,
                "height": h,
                "bytes": served_bytes(variant_bytes(post_id, media_bytes, v), scale),
                "url": base_url + path(post_id, v),
            }
        )
    return out
