"""Trace replay on several seeds and a faster-churn world: cache policies vs our prefetching.

``python -m bench.run prefetch`` → ``bench/results/prefetch.json`` (+ one plot per run). Each
run generates its world's trace (~7 M requests) and replays it through every policy; the
summary gives the mean and a 95% interval over the default world's seeds, and the issue's
bars checked on every run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from core.settings import Settings
from prefetch.replay import engine as replay
from prefetch.replay import real_sizes
from prefetch.replay.report import plot, plot_summary, summarize

SEEDS = (0, 1, 2)
REAL_PHOTOS = 300  # the most requested photos rendered for the real-size run
WORLDS = Path(__file__).resolve().parent / "worlds"
RESULTS = Path(__file__).resolve().parent / "results"


def bars(h: dict[str, Any]) -> dict[str, bool]:
    """The issue's bars at 1% cache and a 10% budget."""
    return {
        "ours_ge_s3fifo_plus_0.05": h["hit_ours"] >= h["hit_s3fifo"] + 0.05,
        "ours_ge_0.9_belady": h["hit_ours"] >= 0.9 * h["hit_belady"],
        "half_gap_to_oracle_closed": (h["gap_closed"] or 0.0) >= 0.5,
        "precision_ge_0.6": (h["precision"] or 0.0) >= 0.6,
        "wasted_le_0.05": h["wasted_bytes_frac"] <= 0.05,
        "egress_le_s3fifo": h["egress_ours_over_s3fifo"] <= 1.0,
        "libcachesim_le_0.5pp": h.get("libcachesim_max_abs_diff_pp", 0.0) <= 0.5,
    }


def _say(key: str) -> Callable[[str], None]:
    return lambda m: print(f"[{key}] {m}", flush=True)


def run(settings: Settings | None = None) -> dict[str, Any]:
    s = settings or Settings()
    worlds: list[tuple[str, int, dict[str, Any]]] = [("default", n, {}) for n in SEEDS]
    worlds.append(("churn", 0, yaml.safe_load((WORLDS / "churn.yaml").read_text())))
    # the first default world again with its photos' sizes from real renditions
    worlds.append(("real_photos", SEEDS[0], {}))
    runs: dict[str, Any] = {}
    for name, seed, overrides in worlds:
        key = f"{name}_seed{seed}"
        out = replay.run(
            replay.replay_config(seed, **overrides),
            reference=(name == "default" and seed == SEEDS[0]) or name == "churn",
            real_photos=REAL_PHOTOS if name == "real_photos" else 0,
            sizes_cache=real_sizes.cache_file(s),
            progress=_say(key),
        )
        plot(out, RESULTS / f"prefetch_{key}")
        out["bars"] = bars(out)
        runs[key] = out
    keys = tuple(k for k in replay.HEADLINE_KEYS if k != "libcachesim_max_abs_diff_pp")
    default = [runs[f"default_seed{s}"] for s in SEEDS]
    first = runs[f"default_seed{SEEDS[0]}"]
    summary = summarize(default, keys)
    plot_summary(summary, RESULTS / "prefetch_summary.png")
    return {
        "summary_default_seeds": summary,
        **{k: first[k] for k in (*keys, "libcachesim_max_abs_diff_pp")},
        "requests_per_s": first["requests_per_s"],
        "runs": {
            k: {kk: v for kk, v in r.items() if kk not in ("results",)} | {"results": r["results"]}
            for k, r in runs.items()
        },
        "all_bars_hold": {k: all(r["bars"].values()) for k, r in runs.items()},
        # the same world and policies, photo sizes simulated → real (prefetch/replay/real_sizes)
        "real_photo_sizes": {
            "sizes": runs[f"real_photos_seed{SEEDS[0]}"]["sizes"],
            **{
                k: {"simulated": first[k], "real": runs[f"real_photos_seed{SEEDS[0]}"][k]}
                for k in keys
            },
        },
    }
