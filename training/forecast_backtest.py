"""Rolling-origin backtest of the traffic forecaster against seasonal naive, statsforecast and
the simulator's true rate (the floor no forecaster can beat on average). On the ``event``
variant the true rate includes the one-off spikes, which nothing can forecast; the spike-free
rate (``forecastable``) is reported beside it as the best a forecaster could do.

Each fold refits every model on the history before its origin and forecasts the next 168 hours;
the 24-hour horizon is the first day of that forecast. Origins are 192 h (8 days) apart, so they
walk through every weekday. MASE uses the weekly (168 h) seasonal naive of the fold's history.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from tqdm import tqdm

from simulator.traffic import TrafficConfig, Variant, generate
from training import forecast_metrics as M
from training.forecast import WEEK, Forecaster, ForecastParams

HORIZONS = (24, WEEK)
STEP = 192
STATS_MODELS = ("AutoETS", "AutoARIMA", "MSTL")
# statsforecast's cost, kept affordable: ETS and MSTL see the last 8 weeks, AutoARIMA (≈20 s a
# fit with season 24) the last 3 weeks and only ``arima_folds`` folds per variant.
ETS_WEEKS, ARIMA_WEEKS = 8, 3
COVER_Q = {80: (0.1, 0.9), 95: (0.025, 0.975)}


@dataclass(frozen=True)
class Fold:
    method: str
    variant: str
    fold: int
    origin: int  # first forecast hour (an index into the series)
    scale: float
    actual: np.ndarray
    quantiles: pd.DataFrame  # columns: quantile levels (0.5 at least), 168 rows


def _stats_forecasts(
    y: np.ndarray, index: pd.DatetimeIndex, origins: Sequence[int], arima_folds: int
) -> dict[str, dict[int, pd.DataFrame]]:
    """statsforecast's mean and 80/95% intervals, all folds of a model in one call."""
    # lazy: statsforecast ~0.8 s at import; only the baselines (baselines=True) use it
    from statsforecast import StatsForecast
    from statsforecast.models import MSTL, AutoARIMA, AutoETS

    def frame(weeks: int, folds: Sequence[int]) -> pd.DataFrame:
        parts = []
        for i in folds:
            t = origins[i]
            lo = max(0, t - weeks * WEEK)
            parts.append(
                pd.DataFrame({"unique_id": i, "ds": index[lo:t], "y": y[lo:t].astype(float)})
            )
        return pd.concat(parts, ignore_index=True)

    every = list(range(len(origins)))
    plan = {
        "AutoETS": (AutoETS(season_length=24), ETS_WEEKS, every),
        "AutoARIMA": (AutoARIMA(season_length=24), ARIMA_WEEKS, every[:arima_folds]),
        "MSTL": (
            MSTL(season_length=[24, WEEK], trend_forecaster=AutoETS(model="ZZN")),
            ETS_WEEKS,
            every,
        ),
    }
    out: dict[str, dict[int, pd.DataFrame]] = {}
    for name, (model, weeks, folds) in plan.items():
        if not folds:
            continue
        sf = StatsForecast(models=[model], freq="h", n_jobs=1)
        fc = sf.forecast(df=frame(weeks, folds), h=WEEK, level=[80, 95])
        out[name] = {}
        for i, g in fc.groupby("unique_id"):
            q = {0.5: g[name].to_numpy()}
            for level, (lo, hi) in COVER_Q.items():
                q[lo] = g[f"{name}-lo-{level}"].to_numpy()
                q[hi] = g[f"{name}-hi-{level}"].to_numpy()
            out[name][int(i)] = pd.DataFrame(q).clip(lower=0)
    return out


def _floor(rate: np.ndarray, dispersion: float, qs: Sequence[float]) -> pd.DataFrame:
    """The true distribution's quantiles (negative binomial around the true rate)."""
    p = dispersion / (dispersion + rate)
    return pd.DataFrame({q: stats.nbinom.ppf(q, dispersion, p) for q in qs})


def _snaive(history: np.ndarray, season: int) -> pd.DataFrame:
    return pd.DataFrame({0.5: np.resize(history[-season:], WEEK).astype(float)})


def origins_for(n: int, folds: int, step: int = STEP) -> list[int]:
    """Origins of ``folds`` folds, the last one's week ending with the series."""
    first = n - WEEK - step * (folds - 1)
    if first < 8 * WEEK:
        raise ValueError(f"{folds} folds leave less than 8 weeks of history to the first one")
    return [first + step * k for k in range(folds)]


def run_variant(
    variant: Variant,
    *,
    folds: int,
    weeks: int,
    seed: int,
    params: ForecastParams,
    baselines: bool,
    arima_folds: int,
    bar: tqdm | None = None,
) -> list[Fold]:
    series = generate(TrafficConfig(variant=variant, weeks=weeks, seed=seed))
    y, index = series.requests, series.index
    origins = origins_for(len(y), folds)
    sf = _stats_forecasts(y, index, origins, arima_folds) if baselines else {}
    out = []
    for k, t in enumerate(origins):
        scale = M.mase_scale(y[:t])
        actual = y[t : t + WEEK]
        model = Forecaster.fit(y[:t], index, params)
        pred = model.predict(y, index, t - 1).reset_index(drop=True)
        methods = {
            "ours": pred,
            "snaive24": _snaive(y[:t], 24),
            "snaive168": _snaive(y[:t], WEEK),
            "floor": _floor(
                series.request_rate[t : t + WEEK], series.config.dispersion, list(pred.columns)
            ),
            # The rate without the spikes no calendar predicts: the floor of a forecaster.
            "forecastable": pd.DataFrame({0.5: series.forecastable_rate[t : t + WEEK]}),
            **{name: f[k] for name, f in sf.items() if k in f},
        }
        out += [Fold(m, variant, k, t, scale, actual, q) for m, q in methods.items()]
        if bar is not None:
            bar.update(1)
    return out


def score(folds: list[Fold], horizon: int) -> dict[str, Any]:
    """Mean over folds of each metric for one method × variant at one horizon."""
    rows: dict[str, list[float]] = {}
    for f in folds:
        a, q = f.actual[:horizon], f.quantiles.iloc[:horizon]
        put = rows.setdefault
        put("mase", []).append(M.mase(a, q[0.5], f.scale))
        put("smape", []).append(M.smape(a, q[0.5]))
        for level in q.columns:
            put(f"pinball_{level}", []).append(M.pinball(a, q[level], level) / f.scale)
        for level, (lo, hi) in COVER_Q.items():
            if lo in q and hi in q:
                put(f"coverage{level}", []).append(M.coverage(a, q[lo], q[hi]))
    return {k: float(np.mean(v)) for k, v in rows.items()} | {"folds": len(folds)}


def backtest(
    variants: Sequence[Variant],
    *,
    folds: int = 8,
    weeks: int = 26,
    seed: int = 0,
    params: ForecastParams | None = None,
    baselines: bool = True,
    arima_folds: int = 2,
    progress: bool = True,
) -> tuple[dict[str, Any], list[Fold]]:
    """The figures (a JSON-able dict with the issue's keys) and every fold's forecasts."""
    params = params or ForecastParams()
    started = time.perf_counter()
    all_folds: list[Fold] = []
    with tqdm(total=len(variants) * folds, desc="backtest", unit="fold", disable=not progress) as b:
        for v in variants:
            b.set_postfix_str(v)
            all_folds += run_variant(
                v,
                folds=folds,
                weeks=weeks,
                seed=seed,
                params=params,
                baselines=baselines,
                arima_folds=arima_folds,
                bar=b,
            )
    results: dict[str, Any] = {}
    for v in variants:
        for h in HORIZONS:
            methods = sorted({f.method for f in all_folds if f.variant == v})
            results.setdefault(v, {})[f"h{h}"] = {
                m: score([f for f in all_folds if f.variant == v and f.method == m], h)
                for m in methods
            }
    out = summarize(results, variants)
    out |= {
        "season": WEEK,
        "folds": folds,
        "fold_step_h": STEP,
        "horizons_h": list(HORIZONS),
        "weeks": weeks,
        "seed": seed,
        "arima": f"season 24, last {ARIMA_WEEKS} weeks, first {arima_folds} folds per variant",
        "ets_mstl_history_weeks": ETS_WEEKS,
        "params": {k: v for k, v in params.__dict__.items() if k != "extra"},
        "results": results,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    return out, all_folds


def summarize(results: dict[str, Any], variants: Sequence[str]) -> dict[str, Any]:
    """Headline keys at the 168 h horizon, and the issue's bars where they can be judged."""
    out: dict[str, Any] = {}
    best: dict[str, list[float]] = {}
    for v in variants:
        r = results[v][f"h{WEEK}"]
        ours, snaive, floor = r["ours"]["mase"], r["snaive168"]["mase"], r["floor"]["mase"]
        out[f"mase_ours_{v}"] = ours
        out[f"mase_snaive_{v}"] = snaive
        out[f"mase_floor_{v}"] = floor
        out[f"headroom_captured_{v}"] = (snaive - ours) / (snaive - floor)
        if "forecastable" in r:  # the spike-free rate: what any forecaster could reach
            best_possible = r["forecastable"]["mase"]
            out[f"mase_forecastable_{v}"] = best_possible
            out[f"forecastable_headroom_captured_{v}"] = (snaive - ours) / (snaive - best_possible)
        out[f"coverage95_{v}"] = r["ours"]["coverage95"]
        out[f"coverage80_{v}"] = r["ours"]["coverage80"]
        for m in STATS_MODELS:
            if m in r:
                best.setdefault(m, []).append(r[m]["mase"])
                out[f"mase_{m}_{v}"] = r[m]["mase"]
    out["coverage95"] = float(np.mean([out[f"coverage95_{v}"] for v in variants]))
    out["coverage80"] = float(np.mean([out[f"coverage80_{v}"] for v in variants]))
    out["mase_ours"] = float(np.mean([out[f"mase_ours_{v}"] for v in variants]))
    full = {m: float(np.mean(s)) for m, s in best.items() if len(s) == len(variants)}
    if full:
        name = min(full, key=lambda m: full[m])
        out["best_statsforecast"] = name
        out["mase_best_statsforecast"] = full[name]
    bars: dict[str, bool] = {}
    if "stationary" in variants:
        bars["stationary_le_0.80_snaive"] = (
            out["mase_ours_stationary"] <= 0.80 * out["mase_snaive_stationary"]
        )
    for v in ("growth", "event"):
        if v in variants:
            bars[f"{v}_ge_30pct_better_snaive"] = (
                out[f"mase_ours_{v}"] <= 0.70 * out[f"mase_snaive_{v}"]
            )
    if "mase_best_statsforecast" in out:
        bars["ge_5pct_better_best_statsforecast"] = (
            out["mase_ours"] <= 0.95 * out["mase_best_statsforecast"]
        )
    bars["coverage95_in_93_97"] = 0.93 <= out["coverage95"] <= 0.97
    out["bars"] = bars
    return out
