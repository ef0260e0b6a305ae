"""Photo renditions, Pillow and libvips side by side (``python -m bench.run media``).

The same job for both engines, each in a fresh worker process (its peak RSS is the worker's):
every shipped photo (``media.samples``) and a phone-shaped crop of each, several times; per
image, the full rendition set of ``media.images.render`` (each width the photo reaches, never
upscaled; progressive JPEG, WebP and AVIF; each at the lowest quality holding
the SSIM a plain JPEG at quality 85 of it holds, at least ``media_ssim_floor``) and, beside it,
that plain baseline JPEG at the same widths.

Figures per engine: ``images_per_s_per_core`` (images ÷ the worker's CPU seconds), ``p50_ms`` and
``p99_ms`` per image, ``peak_rss_mb``, per format and width the mean bytes and SSIM (mean and
5th percentile), ``bytes_vs_baseline`` (each format's total bytes ÷ the baseline JPEG's at the
same widths), and whether each format's per-image 5th-percentile SSIM is no worse than the
baseline's. ``fixed_targets``: the chosen engine with one SSIM target for every image instead
(why the target is per image).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from typing import Any

import numpy as np

from core.settings import Settings

ENGINES = ("pillow", "vips")
REPEATS = 3
PHONE_ASPECT = 9 / 16
BARS = {"jpeg": 0.95, "webp": 0.80, "avif": 0.65}
NAMES = {"jpeg": "progressive_jpeg", "webp": "webp", "avif": "avif"}


def _inputs() -> list[tuple[str, bytes]]:
    from media import samples

    out = []
    for path in samples.photos():
        out.append((path.stem, path.read_bytes()))
        out.append((f"{path.stem}-phone", samples.crop(path, PHONE_ASPECT)))
    return out


def worker(engine_name: str, floor: float, repeats: int, fixed: bool = False) -> dict[str, Any]:
    """One engine's whole job, in this process."""
    from media import images

    eng = images.engine(engine_name)
    inputs = _inputs()
    images.render(
        eng, inputs[0][1], floor=floor, match_baseline=not fixed
    )  # warm: codecs loaded, caches filled
    wall_ms, cpu_s, rows, base = [], 0.0, [], []
    for name, data in inputs:
        for rep in range(repeats):
            c0, t0 = time.process_time(), time.perf_counter()
            renditions, _ = images.render(eng, data, floor=floor, match_baseline=not fixed)
            cpu_s += time.process_time() - c0
            wall_ms.append((time.perf_counter() - t0) * 1000)
            if rep:
                continue
            rows += [
                {"input": name, "format": r.format, "width": r.width, "quality": r.quality,
                 "ssim": r.ssim, "bytes": len(r.data)}
                for r in renditions
            ]  # fmt: skip
            image = eng.load(data)
            for w in sorted({r.width for r in renditions}, reverse=True):
                resized = eng.resize(image, w)
                blob = eng.baseline(resized)
                ref = images.luma(eng.pixels(resized))
                score = images.ssim(images.luma(images.decode_rgb(blob)), ref)
                base.append({"input": name, "width": w, "ssim": score, "bytes": len(blob)})
    return {
        "engine": engine_name,
        "images": len(wall_ms),
        "cpu_s": cpu_s,
        "wall_ms": wall_ms,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "renditions": rows,
        "baseline": base,
    }


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    rows, base = raw["renditions"], raw["baseline"]
    by_fw: dict[str, dict[str, Any]] = {}
    for fmt in BARS:
        by_fw[fmt] = {}
        for w in sorted({r["width"] for r in rows if r["format"] == fmt}, reverse=True):
            sel = [r for r in rows if r["format"] == fmt and r["width"] == w]
            s = np.array([r["ssim"] for r in sel])
            by_fw[fmt][str(w)] = {
                "mean_bytes": float(np.mean([r["bytes"] for r in sel])),
                "ssim_mean": float(s.mean()),
                "ssim_p5": float(np.percentile(s, 5)),
                "mean_quality": float(np.mean([r["quality"] for r in sel])),
            }
    base_total = sum(b["bytes"] for b in base)
    ratio = {
        NAMES[fmt]: sum(r["bytes"] for r in rows if r["format"] == fmt) / base_total for fmt in BARS
    }
    per_image: dict[str, dict[str, float]] = {}
    for name in sorted({b["input"] for b in base}):
        per_image[name] = {
            "baseline": float(np.percentile([b["ssim"] for b in base if b["input"] == name], 5))
        }
        for fmt in BARS:
            sel = [r["ssim"] for r in rows if r["input"] == name and r["format"] == fmt]
            per_image[name][NAMES[fmt]] = float(np.percentile(sel, 5))
    holds = {
        NAMES[fmt]: all(v[NAMES[fmt]] >= v["baseline"] for v in per_image.values()) for fmt in BARS
    }
    wall = np.array(raw["wall_ms"])
    return {
        "images_per_s_per_core": raw["images"] / raw["cpu_s"],
        "p50_ms": float(np.percentile(wall, 50)),
        "p99_ms": float(np.percentile(wall, 99)),
        "peak_rss_mb": raw["peak_rss_mb"],
        "by_format_width": by_fw,
        "baseline_ssim_mean": float(np.mean([b["ssim"] for b in base])),
        "bytes_vs_baseline": ratio,
        "ssim_p5_per_image": per_image,
        "ssim_no_worse_than_baseline": holds,
        "bars_met": all(holds.values()) and all(ratio[NAMES[f]] <= b for f, b in BARS.items()),
    }


def _spawn(engine_name: str, floor: float, repeats: int, fixed: bool = False) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.media", engine_name, str(floor), str(repeats), str(fixed)],
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def run(settings: Settings, fixed_targets: tuple[float, ...] = (0.95, 0.975)) -> dict[str, Any]:
    floor = settings.media_ssim_floor
    engines: dict[str, Any] = {}
    for name in ENGINES:
        print(f"media: {name}, per-image SSIM targets (floor {floor})", flush=True)
        engines[name] = summarize(_spawn(name, floor, REPEATS))
    fixed = {}
    for t in fixed_targets:  # the chosen engine, one pass each
        print(f"media: {settings.media_engine}, one SSIM target {t} for every image", flush=True)
        s = summarize(_spawn(settings.media_engine, t, 1, fixed=True))
        fixed[str(t)] = {
            k: s[k] for k in ("bytes_vs_baseline", "ssim_no_worse_than_baseline", "bars_met")
        }
    chosen = engines[settings.media_engine]
    return {
        "ssim_floor": floor,
        "engine": settings.media_engine,
        "images_per_s_per_core": chosen["images_per_s_per_core"],
        "bytes_vs_baseline": chosen["bytes_vs_baseline"],
        "ssim_no_worse_than_baseline": chosen["ssim_no_worse_than_baseline"],
        "bars": {NAMES[f]: b for f, b in BARS.items()},
        "bars_met": chosen["bars_met"],
        "engines": engines,
        "fixed_targets": fixed,
        "inputs": [name for name, _ in _inputs()],
        "repeats": REPEATS,
        "note": "each engine in its own worker process, one after the other, same photos and "
        "target; CPU from the worker's process time; 2-core machine, the stack idle beside it",
    }


if __name__ == "__main__":
    print(
        json.dumps(worker(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "True"))
    )
