"""Real photographs that installed packages ship, so that media figures and the world's posts
come from photos without a download: matplotlib's ``grace_hopper.jpg`` (512 x 600) and
scikit-learn's ``china.jpg`` and ``flower.jpg`` (640 x 427). Noise or flat colour compresses
unlike a photo, so nothing here is synthetic."""

from __future__ import annotations

import importlib.util
import io
import random
from pathlib import Path

from PIL import Image

CAMERA_MODEL = "FeedcastCam"  # what as_phone_sends_it writes into the EXIF: never passed on
_SHIPPED = (
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    ("sklearn", "datasets/images/china.jpg"),
    ("sklearn", "datasets/images/flower.jpg"),
)


def photos() -> list[Path]:
    """The shipped photos found in this environment; RuntimeError when there are none."""
    out = []
    for package, rel in _SHIPPED:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            continue
        path = Path(spec.origin).parent / rel
        if path.is_file():
            out.append(path)
    if not out:
        raise RuntimeError("no shipped photos found: install matplotlib or scikit-learn")
    return out


def crop(
    path: Path,
    aspect: float,
    scale: float = 1.0,
    quality: int = 92,
    *,
    at: tuple[float, float] = (0.5, 0.5),
    mirror: bool = False,
) -> bytes:
    """A crop of the photo at width/height ``aspect``, ``scale`` of the largest such crop,
    placed at ``at`` (0..1 across the room left on each axis; centred by default), as a JPEG
    (how a phone's share sheet hands a cropped photo over)."""
    with Image.open(path) as im:
        rgb = im.convert("RGB")
    w, h = rgb.size
    cw, ch = (w, round(w / aspect)) if w / h < aspect else (round(h * aspect), h)
    cw, ch = max(1, round(min(cw, w) * scale)), max(1, round(min(ch, h) * scale))
    left, top = round((w - cw) * at[0]), round((h - ch) * at[1])
    out = rgb.crop((left, top, left + cw, top + ch))
    if mirror:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    buf = io.BytesIO()
    out.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


ASPECTS = (1.0, 4 / 5, 1.91, 3 / 4, 4 / 3)  # the feed's square, portrait and landscape shapes


def photo_for(post_id: int) -> bytes:
    """The world's photo for a simulated post: one of the shipped photos, cropped to one of the
    feed's shapes at a size, place and side drawn from the post id (the same post, the same
    bytes; neighbours differ), so that a world's media compresses as photos do."""
    rng = random.Random(post_id)
    shipped = photos()
    return crop(
        rng.choice(shipped),
        rng.choice(ASPECTS),
        rng.uniform(0.55, 1.0),
        at=(rng.random(), rng.random()),
        mirror=rng.random() < 0.5,
    )


def as_phone_sends_it(path: Path, orientation: int = 1) -> bytes:
    """The photo as a phone's camera hands it over: a JPEG carrying GPS coordinates, the camera
    model and an EXIF orientation (6: the pixels are stored rotated, "turn 90 degrees clockwise
    to view"), the metadata the tier must never pass on."""
    with Image.open(path) as im:
        rgb = im.convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    exif[0x0110] = CAMERA_MODEL  # Model
    gps = exif.get_ifd(0x8825)
    gps.update({1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)})
    buf = io.BytesIO()
    rgb.save(buf, "JPEG", quality=92, exif=exif.tobytes())
    return buf.getvalue()
