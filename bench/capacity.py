"""Capacity plans judged minute by minute: ``python -m bench.run capacity`` →
``bench/results/capacity.json`` (the same run as ``feedcast capacity plan --folds 3``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from capacity import backtest
from capacity import plan as cp
from simulator.traffic import VARIANTS

RESULTS = Path(__file__).resolve().parent / "results"


def run(_settings: object = None) -> dict[str, Any]:
    cfg = cp.CapacityConfig()
    out: dict[str, Any] = {}
    for v in VARIANTS:
        out[v] = backtest.evaluate_and_write(
            v, RESULTS / "capacity", cfg, folds=3, progress=lambda m: print(m, flush=True)
        )
    return {**backtest.worst(out), "variants": out}
