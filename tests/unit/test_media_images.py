"""The upload tier's image work on real photos: what is refused before decoding, what leaves
the tier (upright, sRGB, no metadata), the renditions' widths, formats and quality targets."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image

from media import images, samples
from media.images import MediaError

MB = 1_000_000


def _photo() -> bytes:
    return samples.photos()[0].read_bytes()


def _jpeg(im: Image.Image, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


def _with_gps_and_orientation(orientation: int) -> bytes:
    return samples.as_phone_sends_it(samples.photos()[0], orientation)


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"\xff\xd8\xff\xe0" + b"\0" * 20, "jpeg"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 20, "png"),
        (b"RIFF\0\0\0\0WEBPVP8 " + b"\0" * 20, "webp"),
    ],
)
def test_the_type_comes_from_the_bytes(data: bytes, kind: str) -> None:
    assert images.sniff(data) == kind


@pytest.mark.parametrize(
    "data", [b"", b"GIF89a" + b"\0" * 20, b"<svg xmlns='http://www.w3.org/2000/svg'/>", b"%PDF-1.7"]
)
def test_anything_else_is_refused_by_name(data: bytes) -> None:
    with pytest.raises(MediaError) as err:
        images.sniff(data)
    assert err.value.code == "unsupported_type"
    assert "JPEG, PNG or WebP" in str(err.value)


def test_probe_reads_size_from_the_header() -> None:
    p = images.probe(_photo(), max_bytes=20 * MB, max_pixels=50 * MB)
    assert (p.kind, p.width, p.height) == ("jpeg", 512, 600)


def test_too_many_bytes_is_refused_before_anything_else() -> None:
    with pytest.raises(MediaError) as err:
        images.probe(_photo(), max_bytes=10_000, max_pixels=50 * MB)
    assert err.value.code == "too_large"


def _png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height, with almost no data: a decompression bomb's
    shape. Decoding it would allocate width x height x 3 bytes."""
    import zlib

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b""))
        + (chunk(b"IEND", b""))
    )


@pytest.mark.parametrize("side", [10_000, 30_000])  # 100 MP: past our cap; 900 MP: Pillow's too
def test_a_bomb_is_refused_from_its_header(side: int) -> None:
    bomb = _png_header_claiming(side, side)
    assert len(bomb) < 100
    with pytest.raises(MediaError) as err:
        images.probe(bomb, max_bytes=20 * MB, max_pixels=50 * MB)
    assert err.value.code == "too_many_pixels"
    assert "50000000" in err.value.detail


def test_a_truncated_photo_passes_the_probe_and_fails_the_decode() -> None:
    """The header is intact, so the upload is accepted; the full decode later ends it failed."""
    data = _photo()
    cut = data[: len(data) // 3]
    images.probe(cut, max_bytes=20 * MB, max_pixels=50 * MB)
    with pytest.raises(MediaError) as err:
        images.normalize(cut)
    assert err.value.code == "undecodable"


def test_normalize_turns_the_photo_upright_and_drops_every_metadata() -> None:
    upright = images.normalize(_with_gps_and_orientation(1))
    rotated = images.normalize(_with_gps_and_orientation(6))  # "rotate 90 CW to view"
    assert upright.size == (512, 600)
    assert rotated.size == (600, 512)
    for im in (upright, rotated):
        assert im.mode == "RGB"
        assert not im.info
        assert len(im.getexif()) == 0


def test_renditions_carry_no_gps_and_are_what_they_declare() -> None:
    eng = images.PillowEngine()
    sent = _with_gps_and_orientation(6)
    with Image.open(io.BytesIO(sent)) as im:  # what the phone sent does carry them
        assert im.getexif().get_ifd(0x8825)[2] == (48.0, 51.0, 29.0)
    assert samples.CAMERA_MODEL.encode() in sent
    out, placeholder = images.render(eng, sent, floor=0.9, fixed_quality=80)
    assert {(r.variant, r.format) for r in out} == {
        (f"w{w}", f) for w in (320, 150) for f in images.FORMATS
    }  # 600 wide: 1080 and 640 would be upscales
    for r in out:
        assert samples.CAMERA_MODEL.encode() not in r.data
        with Image.open(io.BytesIO(r.data)) as im:
            assert im.format == {"jpeg": "JPEG", "webp": "WEBP", "avif": "AVIF"}[r.format]
            assert im.size == (r.width, r.height)
            assert len(im.getexif()) == 0 and not im.getexif().get_ifd(0x8825)
            assert im.width < im.height * 2  # upright: 600x512 scaled, not 512x600
        assert r.width / r.height == pytest.approx(600 / 512, rel=0.02)
    progressive = next(r for r in out if r.format == "jpeg")
    with Image.open(io.BytesIO(progressive.data)) as im:
        assert im.info.get("progressive") or im.info.get("progression")
    assert placeholder.startswith("data:image/webp;base64,") and len(placeholder) < 400


def test_never_upscaled() -> None:
    assert images.widths_for(4000) == [1080, 640, 320, 150]
    assert images.widths_for(700) == [640, 320, 150]
    assert images.widths_for(150) == [150]
    assert images.widths_for(90) == [90]  # narrower than every variant: its own width only


def test_quality_search_holds_the_plain_jpeg_ssim_per_image() -> None:
    """Each rendition reaches the SSIM a plain q85 JPEG of it reaches, at the lowest quality
    that does: one step lower falls short."""
    eng = images.PillowEngine()
    data = samples.photos()[1].read_bytes()
    out, _ = images.render(eng, data, floor=0.5, widths=(320,))
    image = eng.resize(eng.load(data), 320)
    ref = images.luma(eng.pixels(image))
    base = images.ssim(images.luma(images.decode_rgb(eng.baseline(image))), ref)
    for r in out:
        assert r.target == pytest.approx(base)
        assert r.ssim >= r.target
        lo, _ = images.QUALITY_RANGE[r.format]
        if r.quality > lo:
            below = eng.encode(image, r.format, r.quality - 1)
            assert images.ssim(images.luma(images.decode_rgb(below)), ref) < r.target


def test_ssim_is_one_for_the_same_image_and_falls_with_noise() -> None:
    rng = np.random.default_rng(0)
    y = images.luma(np.asarray(Image.open(samples.photos()[0]).convert("RGB")))
    assert images.ssim(y, y) == pytest.approx(1.0)
    noisy = [images.ssim(y, np.clip(y + rng.normal(0, s, y.shape), 0, 255)) for s in (2, 8, 32)]
    assert noisy[0] > noisy[1] > noisy[2]
    with pytest.raises(ValueError):
        images.ssim(y, y[:-1])


def test_alpha_is_flattened_on_white() -> None:
    im = Image.new("RGBA", (40, 30), (255, 0, 0, 0))  # fully transparent red
    buf = io.BytesIO()
    im.save(buf, "PNG")
    flat = images.normalize(buf.getvalue())
    assert flat.mode == "RGB" and flat.getpixel((5, 5)) == (255, 255, 255)
