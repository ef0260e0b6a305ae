"""Upload post ids: time, shard and sequence bits; increasing; never an announced id."""

from __future__ import annotations

import pytest

from media import ids
from media.renditions import matches_format, parse_name, rendition_url

NOW_MS = 1_796_000_000_000  # 2026-11-30


def test_compose_and_parts_are_inverse() -> None:
    pid = ids.compose(NOW_MS, 4095, 1023)
    assert ids.parts(pid) == (NOW_MS, 4095, 1023)
    assert pid < 2**63
    assert ids.is_upload_id(pid) and pid >= ids.FIRST_UPLOAD_ID


def test_every_upload_id_is_above_what_clients_announce() -> None:
    """Two minutes after the id epoch on, the smallest possible id clears 2^40."""
    assert ids.compose(ids.EPOCH_MS + 2**17, 0, 0) == ids.FIRST_UPLOAD_ID
    assert not ids.is_upload_id(ids.FIRST_UPLOAD_ID - 1)


def test_a_maker_never_repeats_and_waits_out_a_full_millisecond() -> None:
    clock = iter([NOW_MS] * 1030 + [NOW_MS + 1] * 10)
    maker = ids.IdMaker(7, clock_ms=lambda: next(clock))
    made = [maker.next() for _ in range(1025)]
    assert made == sorted(made) and len(set(made)) == len(made)
    assert ids.parts(made[1023]) == (NOW_MS, 7, 1023)
    assert ids.parts(made[1024]) == (NOW_MS + 1, 7, 0)  # the 1,025th: the next millisecond


def test_a_clock_stepping_back_does_not_reissue() -> None:
    clock = iter([NOW_MS, NOW_MS - 5, NOW_MS - 5])
    maker = ids.IdMaker(1, clock_ms=lambda: next(clock))
    a, b, c = maker.next(), maker.next(), maker.next()
    assert a < b < c


@pytest.mark.parametrize(
    ("ms", "shard", "seq"), [(ids.EPOCH_MS - 1, 0, 0), (NOW_MS, 8192, 0), (NOW_MS, 0, 1024)]
)
def test_out_of_range_parts_are_refused(ms: int, shard: int, seq: int) -> None:
    with pytest.raises(ValueError):
        ids.compose(ms, shard, seq)


def test_rendition_names_and_urls() -> None:
    digest = "ab" * 32
    assert parse_name(f"{digest}.jpg") == (digest, "jpeg")
    assert parse_name(f"{digest}.avif") == (digest, "avif")
    for bad in (f"{digest}.png", f"{digest[:-1]}.jpg", f"{digest.upper()}.jpg", f"../{digest}.jpg"):
        assert parse_name(bad) is None
    assert rendition_url("http://edge:8088/", digest, "webp") == (
        f"http://edge:8088/media/r/{digest}.webp"
    )
    assert matches_format(b"\\xff\\xd8\\xff\\xe0", "jpeg") is False  # escaped text, not a JPEG
    assert matches_format(b"\xff\xd8\xff\xe0rest", "jpeg")
    assert matches_format(b"\0\0\0\x1cftypavif", "avif")
    assert not matches_format(b"\xff\xd8\xff\xe0rest", "webp")
