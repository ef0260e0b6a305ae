"""Point and quantile forecast metrics (as in the M4/M5 competitions), on plain arrays."""

from __future__ import annotations

import numpy as np

SEASON = 168  # MASE's in-sample naive is the weekly seasonal naive


def mase_scale(history: np.ndarray, season: int = SEASON) -> float:
    """Mean absolute error of the seasonal naive inside ``history`` (MASE's denominator)."""
    history = np.asarray(history, np.float64)
    if len(history) <= season:
        raise ValueError(f"MASE with season {season} needs more than {season} points of history")
    return float(np.mean(np.abs(history[season:] - history[:-season])))


def mase(actual: np.ndarray, pred: np.ndarray, scale: float) -> float:
    return float(np.mean(np.abs(np.asarray(actual) - np.asarray(pred))) / scale)


def smape(actual: np.ndarray, pred: np.ndarray) -> float:
    """Symmetric MAPE in percent (0 where both are 0)."""
    a, p = np.asarray(actual, np.float64), np.asarray(pred, np.float64)
    den = np.abs(a) + np.abs(p)
    terms = np.divide(2 * np.abs(a - p), den, out=np.zeros_like(den), where=den > 0)
    return float(100 * np.mean(terms))


def pinball(actual: np.ndarray, pred: np.ndarray, q: float) -> float:
    """Mean pinball (quantile) loss of ``pred`` as the ``q`` quantile."""
    diff = np.asarray(actual, np.float64) - np.asarray(pred, np.float64)
    return float(np.mean(np.maximum(q * diff, (q - 1) * diff)))


def coverage(actual: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """Share of ``actual`` inside ``[lo, hi]``."""
    a = np.asarray(actual)
    return float(np.mean((a >= lo) & (a <= hi)))
