"""The content-addressed blob store: names from hashes only, stored once, never overwritten."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from media.blobs import BlobStore, check_digest


def test_put_names_by_hash_and_get_returns_the_bytes(tmp_path: Path) -> None:
    store = BlobStore(str(tmp_path / "blobs"))
    data = b"\xff\xd8\xff" + b"photo" * 100
    digest = store.put(data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert store.get(digest) == data
    assert store.size(digest) == len(data)
    on_disk = list((tmp_path / "blobs").rglob("*"))
    files = [p for p in on_disk if p.is_file()]
    assert [p.name for p in files] == [digest]  # no temporary file left behind
    assert files[0].parent.name == digest[2:4] and files[0].parent.parent.name == digest[:2]


def test_the_same_bytes_are_stored_once_and_never_rewritten(tmp_path: Path) -> None:
    store = BlobStore(str(tmp_path))
    digest = store.put(b"one")
    path = Path(store.path(digest))
    before = path.stat().st_mtime_ns
    assert store.put(b"one") == digest
    assert path.stat().st_mtime_ns == before  # not written again
    assert store.put(b"two") != digest


@pytest.mark.parametrize(
    "name",
    ["../../etc/passwd", "a" * 63, "A" * 64, "g" * 64, "/" + "a" * 63, "a" * 64 + "/x", ""],
)
def test_no_name_but_a_digest_reaches_the_filesystem(tmp_path: Path, name: str) -> None:
    store = BlobStore(str(tmp_path))
    for op in (store.get, store.exists, store.trash, store.restore, store.delete_trashed):
        with pytest.raises(ValueError, match="SHA-256"):
            op(name)
    with pytest.raises(ValueError):
        check_digest(name)


def test_a_takedown_trashes_restores_and_deletes(tmp_path: Path) -> None:
    """Trashed: out of the served store at once (get fails) but kept; restored: served again;
    deleted after the grace period: gone from both."""
    store = BlobStore(str(tmp_path))
    digest = store.put(b"takedown")
    assert store.trash(digest) is True
    assert not store.exists(digest)
    with pytest.raises(FileNotFoundError):
        store.get(digest)
    assert store.trash(digest) is False  # not there any more
    assert store.restore(digest) is True
    assert store.get(digest) == b"takedown"
    store.trash(digest)
    assert store.put(b"takedown") == digest  # uploaded again meanwhile: live again
    assert store.restore(digest) is True and store.get(digest) == b"takedown"
    store.trash(digest)
    assert store.delete_trashed(digest) is True
    assert store.delete_trashed(digest) is False
    assert store.restore(digest) is False and not store.exists(digest)


def test_any_fsspec_url(tmp_path: Path) -> None:
    """A cluster points the store elsewhere by URL: here fsspec's in-memory filesystem."""
    store = BlobStore("memory://feedcast-test-blobs")
    digest = store.put(b"elsewhere")
    assert store.get(digest) == b"elsewhere"
    assert store.fs.protocol in ("memory", ("memory",))
    store.trash(digest)
    assert store.delete_trashed(digest)
