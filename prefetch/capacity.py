"""Capacity planning from quantile forecasts: feed replicas per hour, upload workers, storage.

The plan for the coming week is made from the forecaster's hourly quantiles:

- **feed replicas** per hour: the ``plan_quantile`` forecast of requests in that hour and the
  hours beside it (the rate moves within an hour), divided by what one replica serves at its
  latency target (``replica_rps``). Written as the deployment's autoscaling bounds per hour:
  ``min_replicas`` = the plan, ``max_replicas`` = ``burst_factor`` × the plan, inside which
  Ray's autoscaler (target ``inbound_target``, the same lag) absorbs what the forecast missed.
  The floor is sized at the median forecast: the floor saves the reaction lag on the daily
  ramps, the autoscaler above it covers the noise; sizing the floor at a high quantile costs
  replica-hours the autoscaler would not need (see the README's figures).
- **upload workers** per hour: the same rule over the uploads forecast.
- **storage**: days until the store is full if uploads keep the forecast's p95 bytes per hour.

A minute-by-minute replay judges the replica plan against a **reactive autoscaler** (70%
utilisation target, acting on what it saw ``lag_min`` minutes ago) and **perfect foresight**
(exactly the replicas each minute needs): under-provisioned minutes, unserved requests,
replica-hours. Pure numpy; the CLI (``feedcast capacity plan``) fits the forecaster.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class CapacityConfig:
    # One feed replica's throughput at its latency target (bench/serve: two replicas serve
    # ~40–45 req/s on the 2-core machine).
    replica_rps: float = 20.0
    plan_quantile: float = 0.5
    min_replicas: int = 1
    burst_factor: float = 3.0  # max_replicas = this × the plan (one-off spikes triple the load)
    inbound_target: float = 0.9  # utilisation Ray's autoscaler aims at inside the plan's bounds
    reactive_target: float = 0.7  # utilisation the reactive autoscaler (the baseline) aims at
    lag_min: int = 5  # minutes between load changing and replicas being there (both policies)
    upload_worker_per_h: float = 1800.0  # uploads one worker processes per hour (2 s each)
    storage_capacity_bytes: float = 1e15

    def __post_init__(self) -> None:
        if self.replica_rps <= 0 or self.upload_worker_per_h <= 0:
            raise ValueError("replica_rps and upload_worker_per_h must be positive")
        if not (0.0 < self.reactive_target <= 1.0 and 0.0 < self.inbound_target <= 1.0):
            raise ValueError("reactive_target and inbound_target must be in (0, 1]")
        if self.lag_min < 0 or self.min_replicas < 1:
            raise ValueError("lag_min must be ≥ 0 and min_replicas ≥ 1")
        if self.burst_factor < 1.0:
            raise ValueError("burst_factor must be ≥ 1")


def _neighbour_max(q: np.ndarray) -> np.ndarray:
    """Per hour, the most the rate reaches inside it: the hour, or halfway to a neighbour."""
    prev = np.r_[q[:1], q[:-1]]
    nxt = np.r_[q[1:], q[-1:]]
    return np.maximum(q, np.maximum((q + prev) / 2, (q + nxt) / 2))


def replica_schedule(requests_q: np.ndarray, cfg: CapacityConfig) -> np.ndarray:
    """Replicas per hour for a forecast of requests per hour at ``cfg.plan_quantile``."""
    per_s = _neighbour_max(np.asarray(requests_q, dtype=np.float64)) / 3600.0
    return np.maximum(np.ceil(per_s / cfg.replica_rps), cfg.min_replicas).astype(np.int64)


def upload_workers(uploads_q: np.ndarray, cfg: CapacityConfig) -> np.ndarray:
    """Upload workers per hour for a forecast of uploads per hour."""
    need = _neighbour_max(np.asarray(uploads_q, dtype=np.float64)) / cfg.upload_worker_per_h
    return np.maximum(np.ceil(need), 1).astype(np.int64)


def days_until_full(stored_bytes: float, bytes_per_hour_p95: np.ndarray, capacity: float) -> float:
    """Days until ``capacity`` is reached at the forecast's p95 growth (extended at its mean)."""
    if stored_bytes >= capacity:
        return 0.0
    growth = np.asarray(bytes_per_hour_p95, dtype=np.float64)
    cum = stored_bytes + np.cumsum(growth)
    full = np.flatnonzero(cum >= capacity)
    if len(full):
        return float((full[0] + 1) / 24.0)
    rate = growth.mean()
    if rate <= 0:
        return math.inf
    return float((len(growth) + (capacity - cum[-1]) / rate) / 24.0)


def minute_demand(hour_counts: np.ndarray, seed: int) -> np.ndarray:
    """Requests per minute: each hour's count spread over its minutes (multinomial) along the
    line between the hour's and its neighbours' levels, so minutes sum to the hour."""
    counts = np.asarray(hour_counts, dtype=np.int64)
    level = counts.astype(np.float64)
    t = (np.arange(len(level) * 60) + 0.5) / 60.0
    shape = np.interp(t, np.arange(len(level)) + 0.5, level).reshape(len(level), 60)
    shape = np.maximum(shape, 1e-9)
    shape /= shape.sum(axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.multinomial(n, p) for n, p in zip(counts, shape, strict=True)])


def reactive_replicas(
    demand_min: np.ndarray, cfg: CapacityConfig, target: float | None = None
) -> np.ndarray:
    """What a reactive autoscaler runs each minute: the load it saw ``lag_min`` ago at its
    utilisation target (the first minutes start from the first load)."""
    cap = cfg.replica_rps * 60.0
    util = cfg.reactive_target if target is None else target
    want = np.ceil(np.asarray(demand_min, dtype=np.float64) / (cap * util))
    seen = np.r_[np.full(cfg.lag_min, want[0]), want[: len(want) - cfg.lag_min]]
    return np.maximum(seen, cfg.min_replicas).astype(np.int64)


def planned_replicas(demand_min: np.ndarray, plan_h: np.ndarray, cfg: CapacityConfig) -> np.ndarray:
    """What runs each minute under the plan's hourly bounds: Ray's autoscaler (same lag,
    ``inbound_target``) kept between ``min_replicas`` = plan and ``max_replicas``."""
    lo = np.repeat(np.asarray(plan_h, dtype=np.int64), 60)
    if len(lo) < len(demand_min):
        raise ValueError("the plan covers fewer hours than the demand")
    lo = lo[: len(demand_min)]
    inside = reactive_replicas(demand_min, cfg, cfg.inbound_target)
    return np.clip(inside, lo, max_replicas(lo, cfg))


def max_replicas(plan: np.ndarray, cfg: CapacityConfig) -> np.ndarray:
    """The autoscaling ceiling over a plan: ``burst_factor`` × the plan, at least one more."""
    plan = np.asarray(plan, dtype=np.int64)
    return np.maximum(np.ceil(plan * cfg.burst_factor).astype(np.int64), plan + 1)


def perfect_replicas(demand_min: np.ndarray, cfg: CapacityConfig) -> np.ndarray:
    """Exactly enough replicas each minute (perfect foresight, no lag, 100% utilisation)."""
    cap = cfg.replica_rps * 60.0
    need = np.ceil(np.asarray(demand_min, dtype=np.float64) / cap)
    return np.maximum(need, cfg.min_replicas).astype(np.int64)


def judge(
    demand_min: np.ndarray, replicas_min: np.ndarray, cfg: CapacityConfig
) -> dict[str, float]:
    """Under-provisioned minutes, unserved requests and replica-hours of a replica series."""
    cap = cfg.replica_rps * 60.0
    short = np.maximum(np.asarray(demand_min, np.float64) - replicas_min * cap, 0.0)
    return {
        "underprov_minutes": int((short > 0).sum()),
        "underprov_minutes_frac": float((short > 0).mean()),
        "unserved_requests": float(short.sum()),
        "unserved_frac": float(short.sum() / max(float(np.sum(demand_min)), 1.0)),
        "replica_hours": float(np.sum(replicas_min) / 60.0),
    }


@dataclass(frozen=True)
class CapacityPlan:
    hours: list[str]  # ISO hour starts (UTC)
    replicas: list[int]
    upload_workers: list[int]
    days_until_full: float
    config: CapacityConfig

    def autoscaling_bounds(self) -> list[dict[str, Any]]:
        """The deployment's ``autoscaling_config`` bounds, hour by hour."""
        top = max_replicas(np.array(self.replicas), self.config).tolist()
        return [
            {"hour": h, "min_replicas": r, "max_replicas": m}
            for h, r, m in zip(self.hours, self.replicas, top, strict=True)
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "days_until_full_p95": self.days_until_full,
            "feed_autoscaling": self.autoscaling_bounds(),
            "upload_workers": [
                {"hour": h, "workers": w}
                for h, w in zip(self.hours, self.upload_workers, strict=True)
            ],
        }


def compare(
    demand_min: np.ndarray, plan_replicas_h: np.ndarray, cfg: CapacityConfig
) -> dict[str, Any]:
    """The plan (hourly bounds, Ray's autoscaler inside them) against the reactive autoscaler
    and perfect foresight on the same minutes; the issue's keys plus the raw counts."""
    ours = planned_replicas(demand_min, plan_replicas_h, cfg)
    perfect = judge(demand_min, perfect_replicas(demand_min, cfg), cfg)
    mine = judge(demand_min, ours, cfg)
    reactive = judge(demand_min, reactive_replicas(demand_min, cfg), cfg)
    ph = perfect["replica_hours"]
    return {
        "underprov_minutes_frac": mine["underprov_minutes_frac"],
        "replica_hours_over_perfect": mine["replica_hours"] / ph,
        "unserved_frac": mine["unserved_frac"],
        "reactive_underprov_minutes_frac": reactive["underprov_minutes_frac"],
        "reactive_replica_hours_over_perfect": reactive["replica_hours"] / ph,
        "reactive_unserved_frac": reactive["unserved_frac"],
        "perfect_replica_hours": ph,
        "ours": mine,
        "reactive": reactive,
        "perfect": perfect,
    }


REQUESTS_PER_HOUR = 1_200_000.0  # the fleet the replay sizes: ~333 req/s, ~17 replicas mean


def evaluate(
    variant: str,
    *,
    seed: int = 0,
    weeks: int = 16,
    folds: int = 3,
    cfg: CapacityConfig | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Plan each of the last ``folds`` weeks from a forecaster fitted on the weeks before it,
    and judge the plan minute by minute against the reactive autoscaler and perfect foresight.

    Returns the issue's keys (worst fold for under-provisioning, mean for replica-hours), each
    fold's figures, the last fold's plan and the minute series to plot.
    """
    from simulator.traffic import TrafficConfig, generate
    from training.forecast import Forecaster, ForecastParams

    cfg = cfg or CapacityConfig()
    traffic = generate(
        TrafficConfig(variant=variant, weeks=weeks, seed=seed, requests_per_hour=REQUESTS_PER_HOUR)
    )
    y = traffic.requests.astype(np.float64)
    up = traffic.uploads.astype(np.float64)
    by = traffic.upload_bytes.astype(np.float64)
    index = traffic.index
    rows: list[dict[str, Any]] = []
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
        plan_h = replica_schedule(q_req, cfg)
        demand = minute_demand(traffic.requests[origin + 1 : origin + 169], seed=seed * 100 + k)
        out = compare(demand, plan_h, cfg)
        out["fold"] = folds - k + 1
        rows.append(out)
        hours = [t.isoformat() for t in index[origin + 1 : origin + 169]]
        stored = float(traffic.storage_bytes[origin])
        last = {
            "plan": CapacityPlan(
                hours=hours,
                replicas=plan_h.tolist(),
                upload_workers=upload_workers(q_up, cfg).tolist(),
                days_until_full=days_until_full(stored, q_by, cfg.storage_capacity_bytes),
                config=cfg,
            ),
            "demand_min": demand,
            "ours_min": planned_replicas(demand, plan_h, cfg),
            "reactive_min": reactive_replicas(demand, cfg),
            "perfect_min": perfect_replicas(demand, cfg),
        }
    keys = (
        "underprov_minutes_frac",
        "replica_hours_over_perfect",
        "reactive_underprov_minutes_frac",
        "reactive_replica_hours_over_perfect",
    )
    summary = {
        k: float(max(r[k] for r in rows))
        if "underprov" in k
        else float(np.mean([r[k] for r in rows]))
        for k in keys
    }
    return {"variant": variant, **summary, "folds": rows, "last": last}


def plot(result: dict[str, Any], path: Any, cfg: CapacityConfig) -> Any:
    """Capacity against demand over the last fold's week (requests per second)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
