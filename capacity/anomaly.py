"""Anomaly detection on a live rate, judged per event. Pure: arrays in, alerts and scores out.

Three detectors over per-minute counts, each firing only after ``min_minutes`` consecutive
minutes out of bounds (a single noisy minute is not an incident):

- :func:`band`: the forecaster's own interval for that hour (its 95% band, per minute:
  ``bench/anomaly.py`` builds it from the median and the 80% interval), widened by Poisson
  noise at the expected rate, over rolling windows of several lengths (the sum of W minutes
  has W times the rate and only sqrt(W) times the noise).
- :func:`static`: one fixed low and high threshold for every minute (tuned on calibration weeks).
- :func:`seasonal`: last week's same minutes ± ``k`` standard deviations of the week-over-week
  difference (rolling, over the day before).

:func:`inject` puts spikes, drops and level shifts into a rate; :func:`score` counts per event:
an event is detected when an alert fires during it or within ``grace`` minutes after it ends;
an alert episode that overlaps no event (with its grace) is a false positive.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

WEEK_MIN = 7 * 24 * 60
KINDS = ("spike", "drop", "shift")


@dataclass(frozen=True)
class Event:
    start: int  # minute index
    end: int  # exclusive
    kind: str
    factor: float


# The 95% interval's half-width over the 80% one's, as a normal's (1.96 / 1.28).
WIDEN_80_TO_95 = 1.959964 / 1.281552


def band_bounds(
    median: np.ndarray, q10: np.ndarray, q90: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The 95% band: the median ± the 80% interval's half-widths scaled to 95% as a normal's
    would be. The forecaster's 2.5% and 97.5% quantile boosters themselves, fitted on few points
    beyond them, come out nearly flat (at a true 20 a minute at night: 18 to 101), which no
    anomaly can leave (docs/MONITORING.md)."""
    med = np.asarray(median, np.float64)
    low = med - WIDEN_80_TO_95 * (med - np.asarray(q10, np.float64))
    return low, med + WIDEN_80_TO_95 * (np.asarray(q90, np.float64) - med)


SERIES_UNITS = {"requests": 3600.0, "uploads": 3600.0}  # hourly counts → per second


def band_rows(
    hours: Sequence[str], quantiles: Mapping[str, Mapping[float, np.ndarray]]
) -> list[dict[str, Any]]:
    """The band a capacity plan carries, hour by hour: for each series (``requests``,
    ``uploads``: hourly count quantiles 0.1, 0.5, 0.9), its low, median and high rate per second."""
    rows: list[dict[str, Any]] = [{"hour": h} for h in hours]
    for name, q in quantiles.items():
        low, high = band_bounds(q[0.5], q[0.1], q[0.9])
        per_s = SERIES_UNITS[name]
        for row, lo, med, hi in zip(rows, low, q[0.5], high, strict=True):
            row[f"{name}_low_rps"] = round(max(float(lo), 0.0) / per_s, 5)
            row[f"{name}_median_rps"] = round(float(med) / per_s, 5)
            row[f"{name}_high_rps"] = round(float(hi) / per_s, 5)
    return rows


def band_at(rows: Sequence[Mapping[str, Any]], now: float) -> dict[str, float] | None:
    """The band at ``now`` (epoch s), linear between the hours' midpoints as in the backtest
    (``bench/anomaly.py``); ``None`` outside the rows' hours or where they hold no band."""
    if not rows:
        return None
    start = datetime.fromisoformat(str(rows[0]["hour"])).timestamp()
    t_h = (now - start) / 3600.0
    if not 0.0 <= t_h < len(rows):
        return None
    keys = [k for k in rows[0] if k.endswith("_rps")]
    centres = np.arange(len(rows)) + 0.5
    out = {k: float(np.interp(t_h, centres, [float(r[k]) for r in rows])) for k in keys}
    return out if out and all(math.isfinite(v) for v in out.values()) else None


def _rolling_sum(x: np.ndarray, w: int) -> np.ndarray:
    """Sum of the ``w`` minutes up to and including each minute (fewer at the start)."""
    c = np.cumsum(np.r_[0.0, np.asarray(x, np.float64)])
    lo = np.maximum(np.arange(1, len(x) + 1) - w, 0)
    return c[1:] - c[lo]


def sustained(out: np.ndarray, min_minutes: int) -> np.ndarray:
    """True from the ``min_minutes``-th consecutive True of ``out`` on, while it lasts."""
    out = np.asarray(out, bool)
    run = np.zeros(len(out), np.int64)
    count = 0
    for i, o in enumerate(out):  # a linear pass: weeks of minutes are ~10^5
        count = count + 1 if o else 0
        run[i] = count
    return run >= min_minutes


def band(
    observed: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    *,
    window: int | tuple[int, ...] = (5, 15, 60),
    z: float = 3.0,
    min_minutes: int = 2,
) -> np.ndarray:
    """Alert per minute: over any of the ``window`` lengths, the last minutes' count outside
    the band's sum over them, widened by ``z`` Poisson standard deviations at the band's edge.
    Short windows catch a big change at once; long ones a small one a little later (a 30%
    shift at night is inside the noise of five minutes, not of an hour)."""
    out = np.zeros(len(observed), bool)
    for w in (window,) if isinstance(window, int) else window:
        obs = _rolling_sum(observed, w)
        low, high = _rolling_sum(lo, w), _rolling_sum(hi, w)
        out |= (obs < low - z * np.sqrt(low)) | (obs > high + z * np.sqrt(high))
    return sustained(out, min_minutes)


def static(
    observed: np.ndarray, low: float, high: float, *, window: int = 5, min_minutes: int = 2
) -> np.ndarray:
    obs = _rolling_sum(observed, window) / window
    return sustained((obs < low) | (obs > high), min_minutes)


def seasonal(
    observed: np.ndarray, *, k: float = 4.0, window: int = 5, min_minutes: int = 2
) -> np.ndarray:
    """Against last week's same minutes; no alert in the first week (nothing to compare)."""
    obs = _rolling_sum(observed, window)
    ref = np.r_[np.full(WEEK_MIN, np.nan), obs[:-WEEK_MIN]] if len(obs) > WEEK_MIN else obs * np.nan
    diff = obs - ref
    day = 24 * 60
    sd = np.full(len(obs), np.nan)
    for start in range(WEEK_MIN + day, len(obs), 60):  # σ of the day before, hour by hour
        sd[start : start + 60] = np.nanstd(diff[start - day : start])
    with np.errstate(invalid="ignore"):
        out = np.abs(diff) > k * sd
    return sustained(np.nan_to_num(out, nan=0.0).astype(bool), min_minutes)


def inject(
    rate: np.ndarray,
    n_events: int,
    rng: np.random.Generator,
    *,
    lasting: tuple[int, int] = (10, 120),
    gap: int = 6 * 60,
    start_after: int = 0,
) -> tuple[np.ndarray, list[Event]]:
    """``rate`` with ``n_events`` anomalies, apart by at least ``gap`` minutes: spikes ×1.5–4,
    drops ×0.3–0.7, level shifts ±30%, each 10–120 minutes."""
    out = np.asarray(rate, np.float64).copy()
    events: list[Event] = []
    slots = (len(out) - start_after) // max(n_events, 1)
    for k in range(n_events):
        length = int(rng.integers(lasting[0], lasting[1] + 1))
        lo = start_after + k * slots
        start = int(rng.integers(lo, max(lo + 1, lo + slots - length - gap)))
        kind = KINDS[k % len(KINDS)]
        if kind == "spike":
            factor = float(rng.uniform(1.5, 4.0))
        elif kind == "drop":
            factor = float(rng.uniform(0.3, 0.7))
        else:
            factor = float(rng.choice([0.7, 1.3]))
        out[start : start + length] *= factor
        events.append(Event(start, start + length, kind, factor))
    return out, events


def episodes(alerts: np.ndarray) -> list[tuple[int, int]]:
    """(first, last + 1) minute of each run of alerts."""
    a = np.r_[False, np.asarray(alerts, bool), False].astype(np.int8)
    d = np.diff(a)
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(), strict=True))


def score(alerts: np.ndarray, events: Sequence[Event], *, grace: int = 5) -> dict[str, float]:
    """Per event: recall, precision of alert episodes, median minutes from start to alert."""
    eps = episodes(alerts)
    delays: list[float] = []
    for e in events:
        hits = [s for s, _ in eps if e.start <= s < e.end + grace] + [
            e.start
            for s, t in eps
            if s < e.start < t  # already firing as it began
        ]
        if hits:
            delays.append(float(min(hits) - e.start))
    false = sum(1 for s, t in eps if not any(s < e.end + grace and t > e.start for e in events))
    return {
        "events": len(events),
        "detected": len(delays),
        "recall": len(delays) / len(events) if events else float("nan"),
        "alerts": len(eps),
        "false_alerts": false,
        "precision": (len(eps) - false) / len(eps) if eps else float("nan"),
        "median_delay_min": float(np.median(delays)) if delays else float("nan"),
    }
