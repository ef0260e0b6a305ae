"""Capacity backtest: plan each of the last weeks of a simulated traffic series from a forecaster
fitted on the weeks before it, and replay the plans minute by minute against the reactive
autoscaler and perfect foresight (``feedcast capacity plan``, ``python -m bench.run capacity``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from capacity.plan import (
    CapacityConfig,
    CapacityPlan,
    compare,
    days_until_full,
    minute_demand,
    perfect_replicas,
    planned_replicas,
    reactive_replicas,
    stored_bytes_per_post,
    upload_workers,
)
from simulator.traffic import TrafficConfig, generate
from training.forecast import Forecaster, ForecastParams

REQUESTS_PER_HOUR = 1_200_000.0  # the fleet the replay sizes: ~333 req/s, ~17 replicas mean
LAGS = (5, 15, 30)  # reaction lags (minutes) the replay is also run at
SUMMARY_KEYS = (
    "underprov_minutes_frac",
    "replica_hours_over_perfect",
    "reactive_underprov_minutes_frac",
    "reactive_replica_hours_over_perfect",
    "same_target_underprov_minutes_frac",
    "same_target_replica_hours_over_perfect",
)


def _summary(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Worst fold for under-provisioning, mean over folds for replica-hours."""
    return {
        k: float(max(r[k] for r in rows))
        if "underprov" in k
        else float(np.mean([r[k] for r in rows]))
        for k in SUMMARY_KEYS
    }


def evaluate(
    variant: str,
    *,
    seed: int = 0,
    weeks: int = 16,
    folds: int = 3,
    cfg: CapacityConfig | None = None,
    lags: tuple[int, ...] = LAGS,
    progress: Any = None,
) -> dict[str, Any]:
    """Plan each of the last ``folds`` weeks from a forecaster fitted on the weeks before it,
    and judge the plan minute by minute against the reactive autoscaler and perfect foresight,
    at ``cfg.lag_min`` and at each of ``lags`` (the same plans: the lag is the replay's).

    Returns the issue's keys (worst fold for under-provisioning, mean for replica-hours), the
    same per lag (``by_lag``), each fold's figures, the last fold's plan and its minutes.
    """

    cfg = cfg or CapacityConfig()
    traffic = generate(
        TrafficConfig(variant=variant, weeks=weeks, seed=seed, requests_per_hour=REQUESTS_PER_HOUR)
    )
    y = traffic.requests.astype(np.float64)
    up = traffic.uploads.astype(np.float64)
    by = traffic.upload_bytes.astype(np.float64)
    index = traffic.index
    rows: list[dict[str, Any]] = []
    per_lag: dict[int, list[dict[str, Any]]] = {lag: [] for lag in lags}
    last: dict[str, Any] = {}
    for k in range(folds, 0, -1):
        origin = len(y) - 168 * k - 1
        if progress:
            progress(f"{variant}: fold {folds - k + 1}/{folds}, fitting the forecasters")
        params = ForecastParams(quantiles=tuple(sorted({0.5, cfg.plan_quantile, 0.95})))
        f_req = Forecaster.fit(y[: origin + 1], index[: origin + 1], params)
        q_req = f_req.predict(y, index, origin)[cfg.plan_quantile].to_numpy()
        f_up = Forecaster.fit(up[: origin + 1], index[: origin + 1], params)
        q_up = f_up.predict(up, index, origin)[cfg.plan_quantile].to_numpy()
        f_by = Forecaster.fit(by[: origin + 1], index[: origin + 1], params)
        q_by = f_by.predict(by, index, origin)[0.95].to_numpy()
        demand = minute_demand(traffic.requests[origin + 1 : origin + 169], seed=seed * 100 + k)
        judged = {lag: compare(demand, q_req, replace(cfg, lag_min=lag)) for lag in lags}
        out = dict(judged.get(cfg.lag_min) or compare(demand, q_req, cfg))
        out["fold"] = folds - k + 1
        rows.append(out)
        for lag in lags:
            per_lag[lag].append(judged[lag])
        hours = [t.isoformat() for t in index[origin + 1 : origin + 169]]
        stored = float(traffic.storage_bytes[origin])
        last = {
            "plan": CapacityPlan(
                hours=hours,
                expected_rps=(q_req / 3600.0).tolist(),
                upload_workers=upload_workers(q_up, cfg).tolist(),
                days_until_full=days_until_full(stored, q_by, cfg.storage_capacity_bytes),
                config=cfg,
                expected_uploads=q_up.tolist(),
                bytes_per_post=stored_bytes_per_post(q_up, q_by),
            ),
            "demand_min": demand,
            "ours_min": planned_replicas(demand, q_req, cfg),
            "reactive_min": reactive_replicas(demand, cfg),
            "perfect_min": perfect_replicas(demand, cfg),
        }
    return {
        "variant": variant,
        **_summary(rows),
        "by_lag": {str(lag): _summary(r) for lag, r in per_lag.items()},
        "folds": rows,
        "last": last,
    }


def worst(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Across variants (``evaluate``'s results by name): the worst of each summary key (highest
    under-provisioning, highest replica-hours), overall and per lag."""
    lags = next(iter(results.values()))["by_lag"]
    return {
        **{k: max(float(r[k]) for r in results.values()) for k in SUMMARY_KEYS},
        "by_lag": {
            lag: {
                k: max(float(r["by_lag"][lag][k]) for r in results.values()) for k in SUMMARY_KEYS
            }
            for lag in lags
        },
    }


def evaluate_and_write(
    variant: str, stem: Path, cfg: CapacityConfig, **kwargs: Any
) -> dict[str, Any]:
    """:func:`evaluate` one variant and write its plot (``{stem}_{variant}.png``) and its last
    planned week (``{stem}_{variant}_schedule.yaml``); the figures, with the days until the
    store is full, without the minute series."""
    out = evaluate(variant, cfg=cfg, **kwargs)
    plot(out, Path(f"{stem}_{variant}.png"), cfg)
    plan = out.pop("last")["plan"]
    Path(f"{stem}_{variant}_schedule.yaml").write_text(yaml.safe_dump(plan.to_dict()))
    out["days_until_full_p95"] = plan.days_until_full
    return out


def plot(result: dict[str, Any], path: Any, cfg: CapacityConfig) -> Any:
    """Capacity against demand over the last fold's week (requests per second)."""
    import matplotlib  # lazy: ~0.3 s with pyplot; plotting only, and Agg chosen here

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: as matplotlib, after use("Agg")

    last = result["last"]
    cap = cfg.replica_rps
    t = np.arange(len(last["demand_min"])) / 60.0
    fig, ax = plt.subplots(figsize=(11, 4))
    ax.plot(t, last["demand_min"] / 60.0, lw=0.6, color="black", label="demand")
    ax.step(t, last["ours_min"] * cap, lw=1.0, label="ours: forecast plan")
    ax.step(t, last["reactive_min"] * cap, lw=0.8, alpha=0.8, label="reactive (70%)")
    ax.step(t, last["perfect_min"] * cap, lw=0.6, alpha=0.6, label="perfect foresight")
    ax.set_xlabel("hours into the planned week")
    ax.set_ylabel(f"requests / s (capacity = replicas × {cap:g})")
    ax.set_title(f"{result['variant']}: capacity vs demand")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
