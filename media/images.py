"""Photos in, renditions out: the upload tier's image work, as functions over bytes.

An upload is checked before anything is stored (:func:`probe`): its real type sniffed from the
bytes (JPEG, PNG or WebP; never the client's word), its size and its pixel count read from the
header, so a decompression bomb is refused before it is decoded. Then :func:`normalize` decodes
it in full, applies the EXIF orientation, converts it to sRGB and drops every piece of metadata
(EXIF with its GPS, XMP, IPTC, comments): what leaves the tier is pixels only.

:func:`render` makes the renditions: each width of :data:`WIDTHS` the original reaches (never
upscaled), each as progressive JPEG (optimized Huffman tables), WebP and AVIF, at the lowest
quality whose SSIM on luma against the same resized image holds what a plain JPEG at quality
85 of that rendition holds (never less than ``floor``), plus a tiny placeholder for the feed
item. The target is per image: a plain q85 JPEG keeps 0.94 SSIM of one shipped photo and 0.98
of another, so one fixed target overspends on the first and loses detail on the second.

Two engines do the pixel work, chosen by measurement (``bench/media.py``): Pillow, installed
with AVIF and WebP, and libvips through ``pyvips`` (shrink-on-load, a streaming pipeline). SSIM
and the quality search are the same code for both.
"""

from __future__ import annotations

import base64
import functools
import io
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
from PIL import Image, ImageCms, ImageOps
from scipy.ndimage import gaussian_filter

Kind = Literal["jpeg", "png", "webp"]
Format = Literal["jpeg", "webp", "avif"]
FORMATS: tuple[Format, ...] = ("jpeg", "webp", "avif")
WIDTHS = (1080, 640, 320, 150)  # the feed's variants, widest first
# What a phone's feed draws, rendered without the quality search (the demo's photos, the trace
# replay's sizes): its column and its thumbnail grid, at one quality per format near the
# search's typical choices (bench/media.py has the search).
FEED_WIDTHS = (640, 320)
FIXED_QUALITY: dict[Format, int] = {"jpeg": 82, "webp": 80, "avif": 60}
CONTENT_TYPES = {
    "jpeg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "avif": "image/avif",
}
_PIL_NAMES = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "avif": "AVIF"}
# The quality range searched per format, and the plain JPEG every format is judged against.
QUALITY_RANGE = {"jpeg": (40, 95), "webp": (40, 95), "avif": (30, 90)}
BASELINE_JPEG_QUALITY = 85
PLACEHOLDER_WIDTH = 16


class MediaError(ValueError):
    """An upload the tier refuses; ``code`` is what the API answers (``unsupported_type``,
    ``too_large``, ``too_many_pixels``, ``undecodable``)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code, self.detail = code, detail

    def __reduce__(self) -> tuple[type[MediaError], tuple[str, str]]:  # across processes
        return MediaError, (self.code, self.detail)


@dataclass(frozen=True)
class Probe:
    kind: Kind
    width: int
    height: int
    bytes: int


@dataclass(frozen=True)
class Rendition:
    variant: str  # "w640": the width it was asked for
    format: Format
    width: int
    height: int
    quality: int
    ssim: float
    target: float  # the SSIM it had to reach
    data: bytes


def sniff(data: bytes) -> Kind:
    """The image type from the first bytes; :class:`MediaError` for anything else."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    head = data[:12].hex(" ") if data else "no bytes"
    raise MediaError("unsupported_type", f"not a JPEG, PNG or WebP image (starts {head})")


def probe(data: bytes, *, max_bytes: int, max_pixels: int) -> Probe:
    """Type, size and pixel count from the header alone, before any decoding."""
    if len(data) > max_bytes:
        raise MediaError("too_large", f"{len(data)} bytes; the limit is {max_bytes}")
    kind = sniff(data)
    try:
        with warnings.catch_warnings():  # Pillow warns above 89 MP: the limit here is ours
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[_PIL_NAMES[kind]]) as im:
                width, height = im.size
    except Image.DecompressionBombError as exc:  # past Pillow's own hard limit (179 MP)
        raise MediaError("too_many_pixels", f"{exc} The limit is {max_pixels} pixels.") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise MediaError("undecodable", f"{kind} header unreadable: {exc}") from exc
    if width * height > max_pixels:
        raise MediaError(
            "too_many_pixels",
            f"{width}x{height} = {width * height} pixels; the limit is {max_pixels}",
        )
    return Probe(kind, width, height, len(data))


_SRGB = ImageCms.createProfile("sRGB")


def normalize(data: bytes) -> Image.Image:
    """Decoded in full, turned upright (EXIF orientation), in sRGB, RGB over white where it had
    alpha, and without any metadata: a new image built from the pixels alone."""
    try:
        im: Image.Image = Image.open(io.BytesIO(data))
        im.load()
    except Image.DecompressionBombError as exc:
        raise MediaError("too_many_pixels", str(exc)) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise MediaError("undecodable", f"the image does not decode: {exc}") from exc
    im = ImageOps.exif_transpose(im) or im
    icc = im.info.get("icc_profile")
    if icc and im.mode in ("RGB", "RGBA", "CMYK"):
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            im = (
                ImageCms.profileToProfile(
                    im, source, _SRGB, outputMode="RGBA" if im.mode == "RGBA" else "RGB"
                )
                or im
            )
        except ImageCms.PyCMSError:  # a broken profile: the pixels as they are
            pass
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        im = flat
    rgb = im.convert("RGB")
    return Image.frombytes("RGB", rgb.size, rgb.tobytes())  # no info, no EXIF, no profile


def luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of an H x W x 3 uint8 array, as float64."""
    x = rgb.astype(np.float64)
    return 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004: Gaussian window, sigma 1.5, K1 0.01, K2 0.03) of two
    luma planes of one shape, values 0-255."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} and {b.shape}")
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(x: np.ndarray) -> np.ndarray:
        return np.asarray(gaussian_filter(x, 1.5, truncate=3.5, mode="reflect"))

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return float(np.mean(num / den))


def decode_rgb(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


class Engine(Protocol):
    """The pixel work of one library: the normalized original resized, and encoded."""

    name: str

    def load(self, data: bytes) -> object: ...

    def size(self, image: object) -> tuple[int, int]: ...

    def resize(self, image: object, width: int) -> object: ...

    def pixels(self, image: object) -> np.ndarray: ...

    def encode(self, image: object, fmt: Format, quality: int) -> bytes: ...

    def baseline(self, image: object) -> bytes:
        """Plain JPEG at :data:`BASELINE_JPEG_QUALITY` (baseline scan, default tables)."""
        ...


class PillowEngine:
    name = "pillow"

    def load(self, data: bytes) -> Image.Image:
        return normalize(data)

    def size(self, image: object) -> tuple[int, int]:
        assert isinstance(image, Image.Image)
        return image.size

    def resize(self, image: object, width: int) -> Image.Image:
        assert isinstance(image, Image.Image)
        w, h = image.size
        if width >= w:
            return image
        return image.resize(
            (width, max(1, round(h * width / w))), Image.Resampling.LANCZOS, reducing_gap=3.0
        )

    def pixels(self, image: object) -> np.ndarray:
        assert isinstance(image, Image.Image)
        return np.asarray(image)

    def encode(self, image: object, fmt: Format, quality: int) -> bytes:
        assert isinstance(image, Image.Image)
        buf = io.BytesIO()
        if fmt == "jpeg":
            image.save(buf, "JPEG", quality=quality, progressive=True, optimize=True)
        elif fmt == "webp":
            image.save(buf, "WEBP", quality=quality, method=4)
        else:
            image.save(buf, "AVIF", quality=quality, speed=6)
        return buf.getvalue()

    def baseline(self, image: object) -> bytes:
        assert isinstance(image, Image.Image)
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=BASELINE_JPEG_QUALITY)
        return buf.getvalue()


class VipsEngine:
    """libvips: decodes, orients and converts to sRGB like :func:`normalize` (its metadata
    removed with ``keep=none`` at save), resizes with Lanczos 3."""

    name = "vips"

    def __init__(self) -> None:
        import pyvips  # optional: only where libvips is chosen or compared

        self._vips = pyvips

    def load(self, data: bytes) -> object:
        sniff(data)
        vips = self._vips
        try:
            im = vips.Image.new_from_buffer(data, "", access="sequential").autorot()
            if im.get_typeof("icc-profile-data"):
                im = im.icc_transform("srgb", embedded=True)
            if im.hasalpha():
                im = im.flatten(background=[255, 255, 255])
            im = im.colourspace("srgb")
            return im.copy_memory()
        except vips.Error as exc:
            raise MediaError("undecodable", f"the image does not decode: {exc}") from exc

    def size(self, image: object) -> tuple[int, int]:
        return int(image.width), int(image.height)  # type: ignore[attr-defined]

    def resize(self, image: object, width: int) -> object:
        w = image.width  # type: ignore[attr-defined]
        if width >= w:
            return image
        return image.resize(width / w, kernel="lanczos3").copy_memory()  # type: ignore[attr-defined]

    def pixels(self, image: object) -> np.ndarray:
        return np.asarray(image.numpy(), dtype=np.uint8)[..., :3]  # type: ignore[attr-defined]

    def encode(self, image: object, fmt: Format, quality: int) -> bytes:
        opts = {
            "jpeg": f".jpg[Q={quality},interlace,optimize_coding,keep=none]",
            "webp": f".webp[Q={quality},effort=4,keep=none]",
            "avif": f".avif[Q={quality},effort=3,keep=none]",  # aom speed 6, as Pillow's
        }[fmt]
        return bytes(image.write_to_buffer(opts))  # type: ignore[attr-defined]

    def baseline(self, image: object) -> bytes:
        opts = f".jpg[Q={BASELINE_JPEG_QUALITY},keep=none]"
        return bytes(image.write_to_buffer(opts))  # type: ignore[attr-defined]


def engine(name: str) -> Engine:
    if name == "pillow":
        return PillowEngine()
    if name == "vips":
        return VipsEngine()
    raise ValueError(f"unknown image engine {name!r}; one of pillow, vips")


def search_quality(
    encode: Callable[[int], bytes], reference: np.ndarray, target: float, lo: int, hi: int
) -> tuple[int, float, bytes]:
    """The lowest quality in [lo, hi] whose decoded result holds SSIM >= ``target`` against
    ``reference`` (a luma plane), by bisection (SSIM rises with quality); ``hi`` when none
    does. Returns (quality, SSIM, bytes)."""
    top = hi
    best: tuple[int, float, bytes] | None = None
    while lo <= hi:
        q = (lo + hi) // 2
        data = encode(q)
        score = ssim(luma(decode_rgb(data)), reference)
        if score >= target:
            best, hi = (q, score, data), q - 1
        else:
            lo = q + 1
    if best is None:  # not even the top of the range holds it: the top of the range
        data = encode(top)
        best = (top, ssim(luma(decode_rgb(data)), reference), data)
    return best


def widths_for(width: int, widths: Sequence[int] = WIDTHS) -> list[int]:
    """The rendition widths an original of ``width`` gets: those it reaches, never upscaled;
    an original narrower than all of them gets one rendition at its own width."""
    out = [w for w in widths if w <= width]
    return out or [width]


def render(
    eng: Engine,
    data: bytes,
    *,
    floor: float,
    widths: Sequence[int] = WIDTHS,
    formats: Sequence[Format] = FORMATS,
    fixed_quality: int | Mapping[Format, int] | None = None,
    match_baseline: bool = True,
) -> tuple[list[Rendition], str]:
    """Every rendition of an upload and its placeholder (a data URI). Each width's SSIM target
    is that of a plain q85 JPEG of it, at least ``floor`` (``match_baseline`` False: ``floor``
    alone, one fixed target). ``fixed_quality``: one quality for every format, or one per
    format, instead of the search (the demo's fast path)."""
    image = eng.load(data)
    width, _ = eng.size(image)
    out: list[Rendition] = []
    for w in widths_for(width, widths):
        resized = eng.resize(image, w)
        rw, rh = eng.size(resized)
        reference = luma(eng.pixels(resized))
        target = floor
        if fixed_quality is None and match_baseline:
            baseline = ssim(luma(decode_rgb(eng.baseline(resized))), reference)
            target = max(floor, baseline)
        for fmt in formats:
            lo, hi = QUALITY_RANGE[fmt]
            if fixed_quality is not None:
                lo = hi = fixed_quality if isinstance(fixed_quality, int) else fixed_quality[fmt]
            q, score, blob = search_quality(
                functools.partial(_encode_at, eng, resized, fmt), reference, target, lo, hi
            )
            out.append(Rendition(f"w{w}", fmt, rw, rh, q, score, target, blob))
    return out, placeholder(eng, image)


def _encode_at(eng: Engine, image: object, fmt: Format, quality: int) -> bytes:
    return eng.encode(image, fmt, quality)


def placeholder(eng: Engine, image: object) -> str:
    """A ~16 px wide WebP of the image as a data URI: what the app paints before the photo."""
    tiny = eng.encode(eng.resize(image, PLACEHOLDER_WIDTH), "webp", 30)
    return "data:image/webp;base64," + base64.b64encode(tiny).decode()
