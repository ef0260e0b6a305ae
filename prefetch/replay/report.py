"""Plots and multi-seed summaries of trace replays."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

POLICY_ORDER = ("fifo", "lru", "s3fifo", "belady", "belady_size", "ours", "oracle_prefetch")
LABELS = {
    "fifo": "FIFO",
    "lru": "LRU",
    "s3fifo": "S3-FIFO",
    "belady": "Belady (bytes)",
    "belady_size": "Belady (objects)",
    "ours": "ours: S3-FIFO + prefetch",
    "oracle_prefetch": "oracle prefetch",
}


def plot(out: dict[str, Any], stem: Path) -> list[Path]:
    """Object and byte hit ratio against cache size per policy; ``<stem>_hit.png``."""
    import matplotlib  # lazy: ~0.3 s with pyplot; plotting only, and Agg chosen here

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: as matplotlib, after use("Agg")

    fracs = sorted(out["results"], key=float)
    x = [float(f) * 100 for f in fracs]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric, title in (
        (axes[0], "hit_ratio", "object hit ratio"),
        (axes[1], "byte_hit_ratio", "byte hit ratio"),
    ):
        for pol in POLICY_ORDER:
            y = [out["results"][f][pol][metric] for f in fracs]
            style = "-o" if pol in ("ours", "s3fifo") else "--."
            ax.plot(x, y, style, label=LABELS[pol])
        ax.set_xscale("log")
        ax.set_xlabel("cache size, % of footprint")
        ax.set_title(title)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    seed = out["world"]["seed"]
    fig.suptitle(f"trace replay, seed {seed}: {int(out['trace']['requests']):,} requests")
    fig.tight_layout()
    path = Path(f"{stem}_hit.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def summarize(runs: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Mean and a 95% t-interval half-width of each headline figure over runs (seeds)."""
    from scipy import stats as st  # lazy: scipy.stats ~0.5 s; only the seeds' summary

    out: dict[str, dict[str, float]] = {}
    for k in keys:
        v = np.array([r[k] for r in runs], dtype=np.float64)
        n = len(v)
        half = float(st.t.ppf(0.975, n - 1) * v.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
        out[k] = {
            "mean": float(v.mean()),
            "ci95": half,
            "min": float(v.min()),
            "max": float(v.max()),
        }
    return out


def plot_summary(summary: dict[str, dict[str, float]], path: Path) -> Path:
    """Hit ratios at 1% cache across seeds: mean with 95% intervals, one bar per policy."""
    import matplotlib  # lazy: ~0.3 s with pyplot; plotting only, and Agg chosen here

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: as matplotlib, after use("Agg")

    keys = ["hit_lru", "hit_s3fifo", "hit_ours", "hit_belady", "hit_oracle_prefetch"]
    names = ["LRU", "S3-FIFO", "ours", "Belady", "oracle\nprefetch"]
    mean = [summary[k]["mean"] for k in keys]
    err = [0.0 if math.isnan(summary[k]["ci95"]) else summary[k]["ci95"] for k in keys]
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    bars = ax.bar(names, mean, yerr=err, capsize=4, color=["#999", "#777", "#2a7", "#557", "#a75"])
    for b, m in zip(bars, mean, strict=True):
        ax.text(b.get_x() + b.get_width() / 2, m + 0.02, f"{m:.3f}", ha="center", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("object hit ratio (1% cache)")
    ax.set_title("mean over seeds, 95% interval")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
