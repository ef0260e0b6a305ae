"""Traffic forecaster backtest: ``python -m bench.run forecast`` → ``bench/results/forecast.json``.

The same run as ``feedcast forecast backtest``: 4 variants × 8 rolling origins, refit per fold,
against seasonal naive, statsforecast (AutoARIMA on 2 folds per variant) and the true rate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from simulator.traffic import VARIANTS
from training.forecast_backtest import backtest
from training.forecast_report import plot

RESULTS = Path(__file__).resolve().parent / "results"


def run(_settings: object = None) -> dict[str, Any]:
    out, folds = backtest(VARIANTS, folds=8)
    plot(folds, RESULTS / "forecast.png")
    return out
