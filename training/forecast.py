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

The trees are not the whole forecast. The factored profile times a spike-clipped trailing level
(:func:`structural`) is a forecast of its own, and while the traffic keeps its shape it beats the
trees (it averages every past week; the trees quantise it and add noise). After a shift in shape
the trees win for weeks. So each fit holds back its latest ``horizon`` hours once, fits again
without them, and learns from forecasting them which blend of the two to use and how much to
widen the intervals (:class:`Calibration`, split conformal).
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
SPIKE_CLIP = 1.3  # an hour above this × the profile's expectation is a spike to the level
BLEND_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)  # the trees' share of the point forecast


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
    # Fit a second time without the latest ``horizon`` hours and forecast them, to weigh the
    # trees against the structural profile and to widen the intervals (:class:`Calibration`).
    calibrate: bool = True
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def min_history(self) -> int:
        """Hours of history a fit needs with its held-back week (without it a fit needs
        ``horizon`` fewer and is not calibrated)."""
        return HISTORY + 5 * self.origin_step + self.horizon

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
        # Week 0's ratios stand on a trailing mean of under a week: week 1 replaces them, and
        # until 1 / w falls to alpha the weight is the running mean's (a bias-corrected EWM),
        # so a short history is not dominated by its first weeks.
        weight = max(alpha, 1.0 / w)
        r = ratio[w] if w == 1 else np.clip(ratio[w], ew / clip, ew * clip)
        ew = np.where(np.isnan(r), ew, (1 - weight) * ew + weight * r)
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


def structural(y: np.ndarray, origin: int, horizon: int, clip: float = SPIKE_CLIP) -> np.ndarray:
    """The profile's own forecast of the ``horizon`` hours after ``origin``: the factored
    hour-of-week profile as of the origin × the trailing week's level, that level taken with
    every hour above ``clip`` × the profile's expectation clipped, so a one-off spike in the
    last week does not lift the whole next one. Reads ``y[: origin + 1]`` only."""
    y = np.asarray(y[: origin + 1], dtype=np.float64)
    if len(y) < WEEK:
        raise ValueError(f"the structural forecast needs {WEEK} hours of history")
    after, trailing = _ewm_weeks(y)
    fac = factored(_states_at(after, np.array([origin])))[0]
    last = y[origin + 1 - WEEK :]
    expected = fac[np.arange(origin + 1 - WEEK, origin + 1) % WEEK]
    expected = expected * last.sum() / max(expected.sum(), 1e-9)
    for _ in range(2):  # rescale to the clipped total; twice, as the clip moves with it
        expected = expected * np.minimum(last, clip * expected).sum() / max(expected.sum(), 1e-9)
    level = trailing[origin] * expected.sum() / max(last.sum(), 1e-9)
    return fac[np.arange(origin + 1, origin + 1 + horizon) % WEEK] * level


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


@dataclass(frozen=True)
class Calibration:
    """What a second fit, on all but the latest ``horizon`` hours, learned by forecasting them.

    ``trees``: the boosters' share of the point forecast, the rest the structural profile's
    (:func:`structural`), the share from :data:`BLEND_GRID` with the least absolute error on
    those hours. The profile is the better forecast while the traffic keeps its shape (it
    averages every past week); the trees follow a shift in level or shape that the profile
    takes weeks to learn. ``widen80`` / ``widen95``: split-conformal factors (≥ 1) that stretch
    each quantile's distance from the median until the central 80% / 95% intervals would have
    covered that share of the held-back hours; the boosters' in-sample quantiles are a little
    narrow out of sample. The default is no blend and no widening (models saved before it).
    """

    trees: float = 1.0
    widen80: float = 1.0
    widen95: float = 1.0

    def apply(self, pred: pd.DataFrame, structural: np.ndarray) -> pd.DataFrame:
        """Shift every quantile by the blend's move of the median, then widen around it."""
        trees = pred[0.5].to_numpy()
        med = trees + (1 - self.trees) * (structural - trees)
        out = {
            q: med + (self.widen80 if 0.1 <= q <= 0.9 else self.widen95) * (pred[q] - trees)
            for q in pred.columns
        }
        return pd.DataFrame(out, index=pred.index)


def _conformal(actual: np.ndarray, pred: pd.DataFrame, lo: float, hi: float) -> float:
    """The factor on the distance from the median that makes [lo, hi] cover its share of
    ``actual`` (the finite-sample quantile of split conformal, scaled per side)."""
    med = pred[0.5].to_numpy()
    below = np.maximum(med - pred[lo].to_numpy(), 1e-9)
    above = np.maximum(pred[hi].to_numpy() - med, 1e-9)
    score = np.where(actual < med, (med - actual) / below, (actual - med) / above)
    level = min(1.0, (hi - lo) * (1 + 1 / len(score)))
    return max(1.0, float(np.quantile(score, level)))


@dataclass
class Forecaster:
    """One LightGBM booster per quantile, predicting count / scale; blended with the
    structural profile and widened as its :class:`Calibration` says."""

    params: ForecastParams
    boosters: dict[float, lgb.Booster]
    calibration: Calibration = field(default_factory=Calibration)

    @classmethod
    def fit(cls, y: np.ndarray, index: pd.DatetimeIndex, params: ForecastParams) -> Forecaster:
        """Fit on all of ``y`` (the history up to the forecast origin, nothing after); with
        ``params.calibrate``, fit once more without the latest ``horizon`` hours and calibrate
        on them (skipped when that leaves too little history)."""
        model = cls(params, cls._boosters(y, index, params))
        held = params.horizon
        if params.calibrate and len(training_origins(len(y) - held, held, params.origin_step)) >= 5:
            inner = cls(params, cls._boosters(y[:-held], index, params))
            model.calibration = inner.calibrate(y, index, len(y) - held - 1)
        return model

    @staticmethod
    def _boosters(
        y: np.ndarray, index: pd.DatetimeIndex, params: ForecastParams
    ) -> dict[float, lgb.Booster]:
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
        return boosters

    def calibrate(self, y: np.ndarray, index: pd.DatetimeIndex, origin: int) -> Calibration:
        """The blend and the widening that would have served best on ``y[origin + 1 :]`` (held
        back from this model's fit) from ``origin``."""
        horizon = self.params.horizon
        actual = np.asarray(y[origin + 1 : origin + 1 + horizon], np.float64)
        trees = self._trees(y, index, origin)
        profile = structural(y, origin, horizon)
        blends = [Calibration(trees=w).apply(trees, profile) for w in BLEND_GRID]
        best = int(np.argmin([np.mean(np.abs(actual - b[0.5].to_numpy())) for b in blends]))
        share, blended = BLEND_GRID[best], blends[best]
        widen = {}
        for name, (lo, hi) in (("widen80", (0.1, 0.9)), ("widen95", (0.025, 0.975))):
            if lo in blended and hi in blended:
                widen[name] = _conformal(actual, blended, lo, hi)
        return Calibration(trees=share, **widen)

    def _trees(self, y: np.ndarray, index: pd.DatetimeIndex, origin: int) -> pd.DataFrame:
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
        return pd.DataFrame(pred, columns=qs)

    def predict(self, y: np.ndarray, index: pd.DatetimeIndex, origin: int) -> pd.DataFrame:
        """Quantiles of the ``horizon`` hours after ``origin`` (an index into ``y``; only
        ``y[: origin + 1]`` is read). Columns are the quantiles, sorted so they never cross."""
        pred = self.calibration.apply(
            self._trees(y, index, origin), structural(y, origin, self.params.horizon)
        )
        values = np.sort(np.maximum(pred.to_numpy(), 0.0), axis=1)
        ts = index[0] + pd.to_timedelta(np.arange(origin + 1, origin + 1 + len(pred)), unit="h")
        return pd.DataFrame(values, columns=list(pred.columns), index=ts)

    def save(self, path: Path) -> None:
        """LightGBM's own text format per quantile, the params and calibration as JSON."""
        path.mkdir(parents=True, exist_ok=True)
        (path / "params.json").write_text(json.dumps(asdict(self.params)))
        (path / "calibration.json").write_text(json.dumps(asdict(self.calibration)))
        for q, b in self.boosters.items():
            b.save_model(str(path / f"q{q}.txt"))

    @classmethod
    def load(cls, path: Path) -> Forecaster:
        raw = json.loads((path / "params.json").read_text())
        params = ForecastParams(**{**raw, "quantiles": tuple(raw["quantiles"])})
        boosters = {q: lgb.Booster(model_file=str(path / f"q{q}.txt")) for q in params.quantiles}
        cal = path / "calibration.json"
        calibration = Calibration(**json.loads(cal.read_text())) if cal.exists() else Calibration()
        return cls(params, boosters, calibration)


def to_frame(model: Forecaster, history: pd.DataFrame) -> pd.DataFrame:
    """The serving form: history (``ds`` in UTC, naive or aware; ``y``; hourly, oldest first) →
    ``ds`` (naive UTC, as MLflow signatures want) and one column per quantile (``q0.5``, …) for
    the ``horizon`` hours after its last row."""
    index = pd.DatetimeIndex(pd.to_datetime(history["ds"], utc=True))
    pred = model.predict(history["y"].to_numpy(np.float64), index, len(history) - 1)
    pred.index = pred.index.tz_convert(None)
    return pred.rename(columns=lambda q: f"q{q}").rename_axis("ds").reset_index()
