"""A content-addressed blob store behind fsspec: originals and renditions, named by their bytes.

An object's name is the SHA-256 of its bytes, under two levels of fan-out
(``ab/cd/abcd…``): no part of a name comes from a client, so no upload can choose or escape its
path, and the same bytes are stored once. An object is never overwritten in place: a write to a
name that exists is a no-op (the bytes are the same by construction), and a new object is
written under a temporary name and moved into place, so a reader sees all of it or nothing.

The store is a URL: a local folder by default (``Settings.blob_url`` unset: ``<data_dir>/blobs``),
any fsspec URL on a cluster (``s3://bucket/prefix``, ``gs://…``), so that every replica and
worker of a Ray cluster reads the same objects.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Any

import fsspec

from core.settings import Settings

_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_digest(digest: str) -> str:
    """``digest`` when it is 64 lower-case hex characters; ValueError otherwise."""
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise ValueError(f"not a SHA-256 hex digest: {digest!r:.80}")
    return digest


class BlobStore:
    def __init__(self, url: str, **storage_options: Any) -> None:
        self.url = url
        self.fs, root = fsspec.core.url_to_fs(url, **storage_options)
        self.root = root.rstrip("/")

    @classmethod
    def from_settings(cls, settings: Settings) -> BlobStore:
        return cls(settings.blob_store_url)

    def path(self, digest: str) -> str:
        d = check_digest(digest)
        return f"{self.root}/{d[:2]}/{d[2:4]}/{d}"

    def put(self, data: bytes) -> str:
        """Store ``data`` (once); returns its digest. A name that exists is left as it is."""
        digest = digest_of(data)
        path = self.path(digest)
        if self.fs.exists(path):
            return digest
        folder = path.rsplit("/", 1)[0]
        self.fs.makedirs(folder, exist_ok=True)
        temp = f"{folder}/.{digest}.{uuid.uuid4().hex}.part"
        try:
            with self.fs.open(temp, "wb") as f:
                f.write(data)
            if self.fs.exists(path):  # written meanwhile by another worker: same bytes
                return digest
            self.fs.mv(temp, path)
        finally:
            if self.fs.exists(temp):
                self.fs.rm(temp)
        return digest

    def get(self, digest: str) -> bytes:
        """The object's bytes; FileNotFoundError when it is not stored."""
        with self.fs.open(self.path(digest), "rb") as f:
            data: bytes = f.read()
        return data

    def exists(self, digest: str) -> bool:
        return bool(self.fs.exists(self.path(digest)))

    def size(self, digest: str) -> int:
        return int(self.fs.size(self.path(digest)))

    # -- takedowns: out of reach at once, deleted after a grace period -----------------------
    def trash_path(self, digest: str) -> str:
        d = check_digest(digest)
        return f"{self.root}/trash/{d[:2]}/{d}"

    def trash(self, digest: str) -> bool:
        """Move the object out of the served store (the origin no longer finds it); False
        when it was not there."""
        return self._move(self.path(digest), self.trash_path(digest))

    def restore(self, digest: str) -> bool:
        """Put a trashed object back (a post refers to it again); False when not trashed."""
        return self._move(self.trash_path(digest), self.path(digest))

    def delete_trashed(self, digest: str) -> bool:
        """Delete a trashed object for good (its grace period is over)."""
        path = self.trash_path(digest)
        if not self.fs.exists(path):
            return False
        self.fs.rm(path)
        return True

    def _move(self, src: str, dst: str) -> bool:
        if not self.fs.exists(src):
            return False
        if self.fs.exists(dst):  # the same bytes are there already: drop the other copy
            self.fs.rm(src)
            return True
        self.fs.makedirs(dst.rsplit("/", 1)[0], exist_ok=True)
        self.fs.mv(src, dst)
        return True
