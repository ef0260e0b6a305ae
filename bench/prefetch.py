"""Trace replay on several seeds and a faster-churn world: cache policies vs our prefetching.

``python -m bench.run prefetch`` → ``bench/results/prefetch.json`` (+ one plot per run). Each
run generates its world's trace (~7 M requests) and replays it through every policy; the
summary gives the mean and a 95% interval over the default world's seeds, and the issue's
bars checked on every run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from prefetch.replay import engine as replay
from prefetch.replay.report import plot, plot_summary, summarize

SEEDS = (0, 1, 2)
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


def run(_settings: object = None) -> dict[str, Any]:
    worlds: list[tuple[str, int, dict[str, Any]]] = [("default", s, {}) for s in SEEDS]
    worlds.append(("churn", 0, yaml.safe_load((WORLDS / "churn.yaml").read_text())))
    runs: dict[str, Any] = {}
    for name, seed, overrides in worlds:
        key = f"{name}_seed{seed}"
        out = replay.run(
            replay.replay_config(seed, **overrides),
            reference=(name == "default" and seed == SEEDS[0]) or name == "churn",
            progress=lambda m, k=key: print(f"[{k}] {m}", flush=True),
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
    }
