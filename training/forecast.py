"""Traffic forecaster: direct multi-horizon LightGBM quantile regression on calendar and lags.

One model per quantile forecasts every hour 1..``horizon`` (≤ 168) after an origin at once
(*direct*, not recursive): the horizon is a feature, and every lag a row reads is at or before
its origin, so no row ever sees a value after the hour it is forecast from — a spike planted
after the origin cannot move a forecast made at it (tested). The target is the hour's count
over the mean of the week before the origin, so one model serves any level (growth, shifts),
and a long-run weekly profile (a spike-clipped EWMA of the same hour of the week over every
past week, :func:`seasonal_ewm`) carries the seasonality. Raw weekly lags were tried and
dropped: the trees leaned on them and forwarded their noise (stationary MASE 0.80 vs 0.785 of
weekly seasonal naive's).

Quantiles: the issue's 0.5, 0.9, 0.95, 0.99, plus 0.025, 0.1 and 0.975 for the central
80% and 95% intervals. Crossing quantiles are sorted per row.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

WEEK = 168
QUANTILES = (0.025, 0.1, 0.5, 0.9, 0.95, 0.975, 0.99)
FEATURES = (
    "h",
    "hour",
    "dow",
    "trend",
    "recent_day",
    "last",
    "same_hour_last_day",
    "profile",
    "factored",
)
HISTORY = 2 * WEEK  # hours an origin needs behind it (the trend compares two weeks)


@dataclass(frozen=True)
class ForecastParams:
    """Hyperparameters; every field is logged to MLflow."""

    horizon: int = WEEK
    origin_step: int = 12  # hours between two training origins
    num_boost_round: int = 200
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_data_in_leaf: int = 50
    feature_fraction: float = 0.9
    half_life_weeks: float = 8.0  # recency weight of a training row (by its origin's age)
    seed: int = 0
    quantiles: tuple[float, ...] = QUANTILES
    extra: dict[str, float] = field(default_factory=dict)

    def lgb_params(self, alpha: float) -> dict[str, object]:
        return {
            "objective": "quantile",
            "alpha": alpha,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": self.feature_fraction,
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": 2,
            "verbosity": -1,
            **self.extra,
        }


def design(
    y: np.ndarray, index: pd.DatetimeIndex, origins: np.ndarray, horizon: int
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Rows (origin × hours 1..horizon ahead): features, the scale (mean of the week before the
    origin) and the target's position in ``y``. Reads ``y`` at or before each origin only."""
    if horizon > WEEK:
        raise ValueError(f"horizon {horizon} > {WEEK}: the weekly lags would read the future")
    origins = np.asarray(origins, dtype=np.int64)
    if len(origins) and origins.min() < HISTORY - 1:
        raise ValueError(f"an origin needs {HISTORY} hours of history behind it")
    y = np.asarray(y, dtype=np.float64)
    csum = np.concatenate([[0.0], np.cumsum(y)])
    week = _robust_level(csum, origins + 1)
    prev_week = _robust_level(csum, origins + 1 - WEEK)
    day = (csum[origins + 1] - csum[origins + 1 - 24]) / 24
    after, trailing = _ewm_weeks(y)  # one pass serves both profiles
    profile = after.reshape(-1)[: len(y)] * trailing  # = seasonal_ewm(y)
    fac = factored(_states_at(after, origins))
    scale = np.maximum(week, 1e-9)
    h = np.tile(np.arange(1, horizon + 1), len(origins))
    o = np.repeat(origins, horizon)
    s = np.repeat(scale, horizon)
    target = o + h
    # The latest hour at or before the origin with the target's hour of day.
    same_hour = target - 24 * ((h + 23) // 24)
    ts = index[0] + pd.to_timedelta(target, unit="h")
    x = pd.DataFrame(
        {
            "h": h.astype(np.float64),
            "hour": ts.hour.to_numpy(np.float64),
            "dow": ts.dayofweek.to_numpy(np.float64),
            "trend": np.repeat(week / np.maximum(prev_week, 1e-9), horizon),
            "recent_day": np.repeat(day / scale, horizon),
            "last": y[o] / s,
            "same_hour_last_day": y[same_hour] / s,
            "profile": profile[target - WEEK] / s,
            "factored": fac[np.repeat(np.arange(len(origins)), horizon), target % WEEK]
            * trailing[o]
            / s,
        }
    )
    return x[list(FEATURES)], s, target


def _ewm_weeks(
    y: np.ndarray, alpha: float = 0.12, clip: float = 1.5
) -> tuple[np.ndarray, np.ndarray]:
    """(weeks × 168 EWM ratios after each week, the trailing week's mean at every hour)."""
    n = len(y)
    csum = np.concatenate([[0.0], np.cumsum(y)])
    ends = np.arange(1, n + 1)
    trailing = (csum[ends] - csum[np.maximum(ends - WEEK, 0)]) / np.minimum(ends, WEEK)
    trailing = np.maximum(trailing, 1e-9)
    weeks = -(-n // WEEK)
    flat = np.full(weeks * WEEK, np.nan)
    flat[:n] = y / trailing
    ratio = flat.reshape(weeks, WEEK)
    after = np.empty_like(ratio)
    ew = ratio[0].copy()
    after[0] = ew
    for w in range(1, weeks):
        r = np.clip(ratio[w], ew / clip, ew * clip)
        ew = np.where(np.isnan(r), ew, (1 - alpha) * ew + alpha * r)
        after[w] = ew
    return after, trailing


def seasonal_ewm(y: np.ndarray, alpha: float = 0.12, clip: float = 1.5) -> np.ndarray:
    """Per hour ``s``: an exponentially weighted mean, over every week up to and including
    ``s``, of the same hour of the week (as a share of its trailing week), times the trailing
    week at ``s``. Causal (reads ``y[: s + 1]``); a value over ``clip`` × the running mean (or
    under 1 / ``clip``) enters clipped, so one-off spikes barely move it."""
    after, trailing = _ewm_weeks(y, alpha, clip)
    return after.reshape(-1)[: len(y)] * trailing


def _states_at(after: np.ndarray, hours: np.ndarray) -> np.ndarray:
    """The whole EWM state (168 ratios) as of each of ``hours``: a slot of the week up to the
    hour's own has this week's update, a later slot still last week's (causal)."""
    slot, w = hours % WEEK, hours // WEEK
    before = after[np.maximum(w - 1, 0)]  # week 0's own values stand in before it ends
    return np.where(np.arange(WEEK)[None, :] <= slot[:, None], after[w], before)


def factored(states: np.ndarray) -> np.ndarray:
    """Each 168-hour state as day-of-week level × hour-of-day shape (row and column means of
    its 7 × 24 table): every hour-of-day shape value averages 7 days and every day level 24
    hours, so the noise of one hour of one week weighs 1/7 or 1/24 of what it does in the
    raw profile. The world's traffic is such a product (simulator/traffic.py)."""
    t = states.reshape(-1, 7, 24)
    t = np.where(np.isfinite(t), t, np.nanmean(t, axis=(1, 2), keepdims=True))
    day = t.mean(axis=2, keepdims=True)  # 7 levels
    shape = (t / np.maximum(day, 1e-9)).mean(axis=1, keepdims=True)  # 24 shares
    return (day * shape).reshape(-1, WEEK)


def _robust_level(csum: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Hourly level of the week before each ``end`` (exclusive): the median of its seven daily
    totals / 24, so a one-off spike does not rescale a whole week of forecasts."""
    days = np.stack([csum[ends - 24 * d] - csum[ends - 24 * (d + 1)] for d in range(7)])
    return np.median(days, axis=0) / 24


def training_origins(n_seen: int, horizon: int, step: int) -> np.ndarray:
    """Origins whose history is complete, newest first in spacing: the last is ``n_seen - 2``
    (so the row one hour ahead is still seen); rows past ``n_seen`` are dropped by the caller."""
    last = n_seen - 2
    return np.arange(last, HISTORY - 2, -step)[::-1]


@dataclass
class Forecaster:
    """One LightGBM booster per quantile, predicting count / scale."""

    params: ForecastParams
    boosters: dict[float, lgb.Booster]

    @classmethod
    def fit(cls, y: np.ndarray, index: pd.DatetimeIndex, params: ForecastParams) -> Forecaster:
        """Fit on all of ``y`` (the history up to the forecast origin, nothing after)."""
        origins = training_origins(len(y), params.horizon, params.origin_step)
        if len(origins) < 5:
            raise ValueError(f"need at least {HISTORY + 5 * params.origin_step} hours of history")
        x, scale, target = design(np.pad(y, (0, params.horizon)), index, origins, params.horizon)
        seen = target < len(y)  # the padding is never a target: rows past the history go
        x, label = x[seen], np.asarray(y, np.float64)[target[seen]] / scale[seen]
        age = (len(y) - 1 - np.repeat(origins, params.horizon)[seen]) / WEEK
        weight = 0.5 ** (age / params.half_life_weeks)
        boosters = {}
        for q in params.quantiles:
            data = lgb.Dataset(
                x, label=label, weight=weight, feature_name=list(FEATURES), free_raw_data=False
            )
            boosters[q] = lgb.train(params.lgb_params(q), data, params.num_boost_round)
        return cls(params, boosters)

    def predict(self, y: np.ndarray, index: pd.DatetimeIndex, origin: int) -> pd.DataFrame:
        """Quantiles of the ``horizon`` hours after ``origin`` (an index into ``y``; only
        ``y[: origin + 1]`` is read). Columns are the quantiles, sorted so they never cross."""
        hist = np.pad(np.asarray(y[: origin + 1], np.float64), (0, self.params.horizon))
        x, scale, _ = design(hist, index, np.array([origin]), self.params.horizon)
        qs = sorted(self.boosters)
        # Each booster reads the features it was fitted on (older ones lack the newer).
        pred = (
            np.column_stack(
                [self.boosters[q].predict(x[self.boosters[q].feature_name()]) for q in qs]
            )
            * scale[:, None]
        )
        pred = np.sort(np.maximum(pred, 0.0), axis=1)
        ts = index[0] + pd.to_timedelta(np.arange(origin + 1, origin + 1 + len(x)), unit="h")
        return pd.DataFrame(pred, columns=qs, index=ts)

    def save(self, path: Path) -> None:
        """LightGBM's own text format per quantile and the params as JSON (no pickle)."""
        path.mkdir(parents=True, exist_ok=True)
        (path / "params.json").write_text(json.dumps(asdict(self.params)))
        for q, b in self.boosters.items():
            b.save_model(str(path / f"q{q}.txt"))

    @classmethod
    def load(cls, path: Path) -> Forecaster:
        raw = json.loads((path / "params.json").read_text())
        params = ForecastParams(**{**raw, "quantiles": tuple(raw["quantiles"])})
        boosters = {q: lgb.Booster(model_file=str(path / f"q{q}.txt")) for q in params.quantiles}
        return cls(params, boosters)


def to_frame(model: Forecaster, history: pd.DataFrame) -> pd.DataFrame:
    """The serving form: history (``ds`` in UTC, naive or aware; ``y``; hourly, oldest first) →
    ``ds`` (naive UTC, as MLflow signatures want) and one column per quantile (``q0.5``, …) for
    the ``horizon`` hours after its last row."""
    index = pd.DatetimeIndex(pd.to_datetime(history["ds"], utc=True))
    pred = model.predict(history["y"].to_numpy(np.float64), index, len(history) - 1)
    pred.index = pred.index.tz_convert(None)
    return pred.rename(columns=lambda q: f"q{q}").rename_axis("ds").reset_index()
