"""Which stored objects a post's renditions are, and their URLs.

The bytes live in the blob store (``media/blobs.py``) under their SHA-256; Cassandra's
``renditions_by_post`` (``core/schema/007_media.cql``) lists, per post, each variant and format
with its size and digest. A rendition's URL is ``<media_url>/media/r/<sha256>.<ext>``: one URL per
format and exact bytes (the edge caches it with no ``Vary``), the digest its unguessable part and
its ETag, the object immutable.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cassandra.cluster import Session
from cassandra.query import BatchStatement, BatchType

from media.blobs import BlobStore
from media.images import Rendition, sniff

EXTENSIONS = {"jpeg": "jpg", "webp": "webp", "avif": "avif"}
FORMAT_OF = {ext: fmt for fmt, ext in EXTENSIONS.items()}
FORMAT_ORDER = {"avif": 0, "webp": 1, "jpeg": 2}  # smallest first: what a client tries first
NAME = re.compile(r"^(?P<sha256>[0-9a-f]{64})\.(?P<ext>jpg|webp|avif)$")


@dataclass(frozen=True)
class Stored:
    variant: str
    format: str
    width: int
    height: int
    bytes: int
    sha256: str
    quality: int
    ssim: float

    def url(self, media_url: str) -> str:
        return rendition_url(media_url, self.sha256, self.format)

    def item(self, media_url: str) -> dict[str, Any]:
        """What a client gets of it (a feed item's or an upload status's ``renditions``)."""
        return {
            "variant": self.variant,
            "format": self.format,
            "width": self.width,
            "height": self.height,
            "bytes": self.bytes,
            "url": self.url(media_url),
        }


_SELECT = (
    "SELECT variant, format, width, height, bytes, sha256, quality, ssim "
    "FROM renditions_by_post WHERE post_id = ?"
)


def _listed(rows: Any) -> list[Stored]:
    """A post's rows as :class:`Stored`, widest first, smallest format first."""
    out = [
        Stored(r.variant, r.format, r.width, r.height, r.bytes, r.sha256, r.quality, r.ssim)
        for r in rows
    ]
    return sorted(out, key=lambda s: (-s.width, FORMAT_ORDER.get(s.format, 9)))


PATH_PREFIX = "/media/r/"  # every stored rendition's path at the edge and the origin


def rendition_path(sha256: str, fmt: str) -> str:
    return f"{PATH_PREFIX}{sha256}.{EXTENSIONS[fmt]}"


def first_drawn(found: Mapping[int, list[Stored]]) -> dict[int, tuple[str, int]]:
    """post → (path, bytes) of the rendition a client draws first (the widest, its first
    format: :func:`_listed`'s order), for the posts with any: what the prefetcher warms."""
    return {
        p: (rendition_path(rs[0].sha256, rs[0].format), rs[0].bytes)
        for p, rs in found.items()
        if rs
    }


def rendition_url(media_url: str, sha256: str, fmt: str) -> str:
    return media_url.rstrip("/") + rendition_path(sha256, fmt)


def parse_name(name: str) -> tuple[str, str] | None:
    """(sha256, format) of a rendition's file name, None for anything else."""
    m = NAME.fullmatch(name)
    return (m["sha256"], FORMAT_OF[m["ext"]]) if m else None


def matches_format(data: bytes, fmt: str) -> bool:
    """Whether stored bytes are the format their URL names (AVIF: an ISO-BMFF ``ftyp`` box)."""
    if fmt == "avif":
        return data[4:8] == b"ftyp" and data[8:12] in (b"avif", b"avis")
    try:
        return sniff(data) == fmt
    except ValueError:
        return False


class RenditionStore:
    """A post's renditions: blobs first, then their references (``blob_refs``), then the
    post's rows in one single-partition batch (all of them or none), so a listed rendition's
    bytes are always there."""

    def __init__(self, session: Session, blobs: BlobStore, timeout_s: float = 5.0) -> None:
        self.session, self.blobs, self.timeout_s = session, blobs, timeout_s
        self._insert = session.prepare(
            "INSERT INTO renditions_by_post (post_id, variant, format, width, height, bytes, "
            "sha256, quality, ssim) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        self._select = session.prepare(_SELECT)
        self._ref = session.prepare("INSERT INTO blob_refs (sha256, post_id) VALUES (?, ?)")

    def put(self, post_id: int, renditions: list[Rendition]) -> list[Stored]:
        stored = []
        for r in renditions:
            digest = self.blobs.put(r.data)
            stored.append(
                Stored(
                    r.variant, r.format, r.width, r.height, len(r.data), digest, r.quality, r.ssim
                )
            )
        # Each blob's reference first: a takedown of another post with the same bytes then
        # keeps them (schema v8), and a listed rendition is always a referenced one.
        refs = [
            self.session.execute_async(self._ref, (s.sha256, post_id), timeout=self.timeout_s)
            for s in stored
        ]
        for f in refs:
            f.result()
        batch = BatchStatement(batch_type=BatchType.UNLOGGED)
        for s in stored:
            batch.add(
                self._insert,
                (post_id, s.variant, s.format, s.width, s.height, s.bytes, s.sha256, s.quality,
                 s.ssim),
            )  # fmt: skip
        self.session.execute(batch, timeout=self.timeout_s)
        return stored

    def get(self, post_id: int) -> list[Stored]:
        """The post's renditions, widest first; [] for a post with none."""
        return _listed(self.session.execute(self._select, (post_id,), timeout=self.timeout_s))


class StoredLookup:
    """Post id → its stored renditions, behind a per-process LRU (a post's renditions never
    change once it is ready; a post is announced only when they are stored, so a post seen in
    a feed has them). Cassandra errors propagate."""

    def __init__(self, session_of: Callable[[], Session], max_posts: int = 16_384) -> None:
        self._session_of, self.max_posts = session_of, max_posts
        self._lru: OrderedDict[int, list[Stored]] = OrderedDict()
        self._lock = threading.Lock()
        self._select: Any = None

    def clear(self) -> None:
        with self._lock:
            self._lru.clear()

    def get(self, post_ids: Sequence[int], timeout_s: float) -> dict[int, list[Stored]]:
        out: dict[int, list[Stored]] = {}
        with self._lock:
            for p in post_ids:
                if (hit := self._lru.get(p)) is not None:
                    self._lru.move_to_end(p)
                    out[p] = hit
        todo = [p for p in dict.fromkeys(post_ids) if p not in out]
        if not todo:
            return out
        session = self._session_of()
        if self._select is None:
            self._select = session.prepare(_SELECT)
        futures = [(p, session.execute_async(self._select, (p,), timeout=timeout_s)) for p in todo]
        for p, fut in futures:
            out[p] = _listed(fut.result())
        with self._lock:
            for p in todo:
                if out[p]:  # not cached while empty: a post may be read before it is ready
                    self._lru[p] = out[p]
            while len(self._lru) > self.max_posts:
                self._lru.popitem(last=False)
        return out
