"""Upload jobs spread over the sweeper's partitions: ``post_id % 8`` put every job in bucket 0
(an upload id's low bits are its sequence within a millisecond, 0 at any real upload rate), so
every finished job's tombstone piled up in one partition that every sweep read."""

from __future__ import annotations

from collections import Counter

from media import ids
from serving.uploads import PENDING_BUCKETS, pending_bucket


def _ids_one_per_ms(n: int) -> list[int]:
    clock = iter(range(1_800_000_000_000, 1_800_000_000_000 + 1000 * n, 1000))
    maker = ids.IdMaker(shard=3, clock_ms=lambda: next(clock))
    return [maker.next() for _ in range(n)]


def test_slow_uploads_all_share_one_residue_mod_8() -> None:  # what the old bucket did
    assert {p % PENDING_BUCKETS for p in _ids_one_per_ms(200)} == {0}


def test_pending_bucket_spreads_them_over_every_partition() -> None:
    counts = Counter(pending_bucket(p) for p in _ids_one_per_ms(4000))
    assert set(counts) == set(range(PENDING_BUCKETS))
    assert max(counts.values()) < 1.25 * 4000 / PENDING_BUCKETS  # about even


def test_a_burst_within_one_millisecond_spreads_too() -> None:
    maker = ids.IdMaker(shard=5, clock_ms=lambda: 1_800_000_000_000)
    assert len({pending_bucket(maker.next()) for _ in range(64)}) == PENDING_BUCKETS
