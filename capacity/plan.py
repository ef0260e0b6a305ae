"""Capacity planning from quantile forecasts: feed replicas per hour, upload workers, storage.

The plan for the coming week is made from the forecaster's hourly quantiles:

- **feed replicas**: the forecast says how the load will *move*; the load seen says where it
  *is*. Replicas take ``lag_min`` minutes to arrive, so each decision sizes for the load seen
  now times the growth the forecast expects over that lag (never below 1: a forecast decline
  does not shrink the fleet ahead of time), at ``inbound_target`` utilisation
  (:func:`guided`); where the load itself climbs faster than that (a spike no calendar
  predicts), its own climb over the last lag is extrapolated instead (:func:`climb`). A
  forecast that is off in level (the weeks after a regime shift) then costs nothing; one that
  knows the daily ramps saves the lag on them. Written as the deployment's autoscaling plan
  per hour: the expected rate (the ``plan_quantile`` forecast), ``min_replicas`` =
  ``floor_share`` × what that rate needs (a safety net should the load metrics stall) and
  ``max_replicas`` = ``burst_factor`` × it, or twice the week's busiest hour's.
  ``serving/autoscaling.py`` runs the same rule as a Ray Serve autoscaling policy.
- **upload workers** per hour: the forecast uploads of the hour (and halfway to a busier
  neighbour) ÷ what one worker processes.
- **storage**: days until the store is full if uploads keep the forecast's p95 bytes per hour.

The schedule carries, beside each hour's upload workers, the uploads they were sized for and the
stored bytes per post the storage plan assumes: ``serving/autoscaling.py`` holds the upload
tier's floor at the hour's workers, and the upload tier counts the days until full from the
bytes it stores now (``media/storage.py``).

A minute-by-minute replay judges the replica plan against a **reactive autoscaler** (70%
utilisation target, acting on what it saw ``lag_min`` minutes ago), the same autoscaler at our
target without the forecast (what the forecast adds), and **perfect foresight** (exactly the
replicas each minute needs): under-provisioned minutes, unserved requests, replica-hours. The
minutes follow a continuous rate whose hourly totals are the series' (:func:`minute_rate`).
Pure numpy; :mod:`capacity.backtest` fits the forecaster on simulated weeks and replays the
plans (``feedcast capacity plan``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

# The storage rule lives with the media store (the upload tier needs it too, and media is below
# capacity); re-exported as part of the plan's API.
from media.storage import days_until_full as days_until_full


@dataclass(frozen=True)
class CapacityConfig:
    # One feed replica's throughput at its latency target (bench/serve: two replicas serve
    # ~40–45 req/s on the 2-core machine).
    replica_rps: float = 20.0
    plan_quantile: float = 0.5  # the forecast quantile taken as the expected rate
    floor_share: float = 0.8  # min_replicas = this × the replicas the expected rate needs
    min_replicas: int = 1
    burst_factor: float = 3.0  # max_replicas = this × the plan (one-off spikes triple the load)
    inbound_target: float = 0.9  # utilisation the forecast-guided autoscaler aims at
    reactive_target: float = 0.7  # utilisation the reactive autoscaler (the baseline) aims at
    lag_min: int = 5  # minutes between load changing and replicas being there (both policies)
    # A climb of the load itself over the lag past this factor (an event the forecast did not
    # know) is extrapolated too; each end of the climb is the mean over this many minutes.
    climb_threshold: float = 1.05
    climb_window_min: int = 5
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
        if not 0.0 <= self.floor_share <= 1.0:
            raise ValueError("floor_share must be in [0, 1]")
        if self.climb_threshold < 1.0 or self.climb_window_min < 1:
            raise ValueError("climb_threshold must be ≥ 1 and climb_window_min ≥ 1")


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


def stored_bytes_per_post(uploads_q: np.ndarray, bytes_q: np.ndarray) -> float | None:
    """Stored bytes per post the storage plan assumes: the forecast bytes over the forecast
    uploads, summed over the plan (the p95 bytes over the ``plan_quantile`` uploads, so the
    plan's uploads times it add up to the growth :func:`days_until_full` counted). The upload
    tier multiplies the plan's uploads by it from the bytes stored now
    (:func:`media.storage.days_until_full_now`). None where no upload is forecast."""
    uploads = float(np.sum(uploads_q, dtype=np.float64))
    return float(np.sum(bytes_q, dtype=np.float64)) / uploads if uploads > 0 else None


def delayed(x: np.ndarray, lag: int) -> np.ndarray:
    """``x`` as seen ``lag`` steps later (the first value stands in before it), same length."""
    x = np.asarray(x)
    k = min(lag, len(x))
    return np.r_[np.full(k, x[0] if len(x) else 0), x[: len(x) - k]]


def rate_knots(hourly: np.ndarray) -> np.ndarray:
    """Levels at the hours' midpoints such that the line through them has each hour's mean:
    the rate is continuous and its hourly totals are the series' (the line's integral over hour
    i is (k[i-1] + 6 k[i] + k[i+1]) / 8, solved for k; ends held flat; minute midpoints sample
    it exactly). The exact solve rings around a step (a knot beside a 3× spike dips to about
    half its hour), and where an hour is over ~5× its neighbours a knot would go negative: it
    is kept ≥ 5% of its hour, and those hours' totals are then only approximate (the minute
    replay still draws each hour's exact count, :func:`minute_demand`)."""
    c = np.asarray(hourly, dtype=np.float64)
    n = len(c)
    a = np.diag(np.full(n, 6.0)) + np.diag(np.ones(n - 1), 1) + np.diag(np.ones(n - 1), -1)
    a[0, 0] += 1.0
    a[-1, -1] += 1.0
    return np.maximum(np.linalg.solve(a / 8.0, c), 0.05 * c)


def rate_at(hourly: np.ndarray, hours: np.ndarray | float) -> np.ndarray:
    """The continuous rate (per hour) at ``hours`` after the first hour's start."""
    c = np.asarray(hourly, dtype=np.float64)
    return np.interp(hours, np.arange(len(c)) + 0.5, rate_knots(c))


def minute_rate(hourly: np.ndarray) -> np.ndarray:
    """Per-minute rate of an hourly series along :func:`rate_knots` (per hour units)."""
    n = len(np.asarray(hourly))
    return rate_at(hourly, (np.arange(n * 60) + 0.5) / 60.0)


def minute_demand(hour_counts: np.ndarray, seed: int) -> np.ndarray:
    """Requests per minute: each hour's count spread over its minutes (multinomial) along the
    continuous rate through the hours (:func:`minute_rate`), so minutes sum to the hour and the
    rate does not jump where hours meet (normalising a plain interpolation per hour did: up to
    35% in a minute at the edge of a spike hour)."""
    counts = np.asarray(hour_counts, dtype=np.int64)
    shape = np.maximum(minute_rate(counts.astype(np.float64)).reshape(len(counts), 60), 1e-9)
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
    seen = delayed(want, cfg.lag_min)
    return np.maximum(seen, cfg.min_replicas).astype(np.int64)


def guided(load: Any, growth: Any, per_replica: float) -> Any:
    """Replicas for ``load`` seen now when the forecast expects it to grow by ``growth`` before
    they are up (a forecast fall is ignored: the fleet does not shrink ahead of it), at
    ``per_replica`` load each. Scalars or arrays; the replay and the Ray Serve policy share it."""
    return np.ceil(np.asarray(load, np.float64) * np.maximum(growth, 1.0) / per_replica)


def climb(recent: Any, earlier: Any, threshold: float, floor: float) -> Any:
    """The load's own growth over the lag (its recent mean over its mean one lag earlier) where
    that passes ``threshold``, else 1: an event the forecast did not know is extrapolated, the
    noise of a flat load is not. The earlier mean counts as at least ``floor`` (one replica's
    load), so a climb from idle is not read as an infinite one."""
    base = np.maximum(np.asarray(earlier, np.float64), floor)
    ratio = np.asarray(recent, np.float64) / base
    return np.where(ratio > threshold, ratio, 1.0)


def lead_growth(rate_h: np.ndarray, lag_min: int) -> np.ndarray:
    """Per minute t of the plan: the forecast rate at t over the rate ``lag_min`` earlier (when
    the decision that is in force at t was taken)."""
    rate = minute_rate(rate_h)
    then = delayed(rate, lag_min)
    return rate / np.maximum(then, 1e-9)


def hourly_bounds(rate_h: np.ndarray, cfg: CapacityConfig) -> tuple[np.ndarray, np.ndarray]:
    """``min_replicas`` and ``max_replicas`` per hour for an expected rate (requests/h)."""
    plan = replica_schedule(rate_h, cfg)
    lo = np.maximum(np.ceil(cfg.floor_share * plan - 1e-9), cfg.min_replicas).astype(np.int64)
    return lo, max_replicas(plan, cfg)


def planned_replicas(demand_min: np.ndarray, rate_h: np.ndarray, cfg: CapacityConfig) -> np.ndarray:
    """What runs each minute under the plan: :func:`guided` on the load seen ``lag_min`` ago and
    the growth expected since (the forecast's, or the load's own :func:`climb` where steeper),
    inside the hour's bounds."""
    rate_h = np.asarray(rate_h, dtype=np.float64)
    if len(rate_h) * 60 < len(demand_min):
        raise ValueError("the plan covers fewer hours than the demand")
    n = len(demand_min)
    lo, hi = (np.repeat(b, 60)[:n] for b in hourly_bounds(rate_h, cfg))
    d = np.asarray(demand_min, dtype=np.float64)
    lag, w = cfg.lag_min, cfg.climb_window_min
    seen = delayed(d, lag)
    csum = np.r_[0.0, np.cumsum(seen)]
    start = np.maximum(np.arange(n) + 1 - w, 0)
    recent = (csum[1:] - csum[start]) / (np.arange(n) + 1 - start)
    per_replica = cfg.replica_rps * 60.0 * cfg.inbound_target
    rise = climb(recent, delayed(recent, lag), cfg.climb_threshold, per_replica)
    want = guided(seen, np.maximum(lead_growth(rate_h, lag)[:n], rise), per_replica)
    return np.clip(want, lo, hi).astype(np.int64)


def max_replicas(plan: np.ndarray, cfg: CapacityConfig) -> np.ndarray:
    """The autoscaling ceiling over a plan: ``burst_factor`` × the hour's plan (at least one
    more), or twice the plan's busiest hour, whichever is more. A spike in a quiet hour can
    need the peak's fleet (3 × the night's plan cut off a 4.6× spike on event), and a spike at
    the peak more than it (one at 1.02 × the peak's plan ran 5 minutes short)."""
    plan = np.asarray(plan, dtype=np.int64)
    top = np.maximum(np.ceil(plan * cfg.burst_factor).astype(np.int64), plan + 1)
    return np.maximum(top, 2 * plan.max(initial=0))


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
    expected_rps: list[float]  # the plan_quantile forecast of requests per second
    upload_workers: list[int]
    days_until_full: float
    config: CapacityConfig
    # The forecast uploads per hour that upload_workers were sized for; None in plans made
    # before the schedule carried them.
    expected_uploads: list[float] | None = None
    bytes_per_post: float | None = None  # stored bytes per upload the storage plan assumes
    # The forecaster's 95% band per hour (``capacity.anomaly.band_rows``) that the live
    # request and upload rates are judged against (monitoring/rules.yml); None without it.
    forecast_band: list[dict[str, Any]] | None = None

    def autoscaling_bounds(self) -> list[dict[str, Any]]:
        """Hour by hour: the expected rate and the deployment's ``min_replicas`` and
        ``max_replicas`` (what :class:`serving.autoscaling.ForecastPolicy` runs)."""
        lo, hi = hourly_bounds(np.asarray(self.expected_rps) * 3600.0, self.config)
        return [
            {
                "hour": h,
                "expected_rps": round(float(r), 3),
                "min_replicas": int(a),
                "max_replicas": int(b),
            }
            for h, r, a, b in zip(self.hours, self.expected_rps, lo, hi, strict=True)
        ]

    def upload_rows(self) -> list[dict[str, Any]]:
        """Hour by hour: the upload workers (the upload tier's floor,
        :class:`serving.autoscaling.UploadFloorPolicy`) and, where the plan has them, the
        forecast uploads they were sized for."""
        rows: list[dict[str, Any]] = [
            {"hour": h, "workers": int(w)}
            for h, w in zip(self.hours, self.upload_workers, strict=True)
        ]
        if self.expected_uploads is not None:
            for row, u in zip(rows, self.expected_uploads, strict=True):
                row["expected_uploads"] = round(float(u), 3)
        return rows

    def to_dict(self) -> dict[str, Any]:
        out = {
            "config": asdict(self.config),
            "days_until_full_p95": self.days_until_full,
            "feed_autoscaling": self.autoscaling_bounds(),
            "upload_workers": self.upload_rows(),
        }
        if self.bytes_per_post is not None:
            out["bytes_per_post"] = float(self.bytes_per_post)
        if self.forecast_band is not None:
            out["forecast_band"] = self.forecast_band
        return out


def compare(demand_min: np.ndarray, rate_h: np.ndarray, cfg: CapacityConfig) -> dict[str, Any]:
    """The plan (forecast-guided, inside its hourly bounds) against the reactive autoscaler, the
    same autoscaler at our target without the forecast, and perfect foresight, on the same
    minutes: the issue's keys plus the raw counts."""
    perfect = judge(demand_min, perfect_replicas(demand_min, cfg), cfg)
    mine = judge(demand_min, planned_replicas(demand_min, rate_h, cfg), cfg)
    reactive = judge(demand_min, reactive_replicas(demand_min, cfg), cfg)
    same = judge(demand_min, reactive_replicas(demand_min, cfg, cfg.inbound_target), cfg)
    ph = perfect["replica_hours"]
    return {
        "underprov_minutes_frac": mine["underprov_minutes_frac"],
        "replica_hours_over_perfect": mine["replica_hours"] / ph,
        "unserved_frac": mine["unserved_frac"],
        "reactive_underprov_minutes_frac": reactive["underprov_minutes_frac"],
        "reactive_replica_hours_over_perfect": reactive["replica_hours"] / ph,
        "reactive_unserved_frac": reactive["unserved_frac"],
        "same_target_underprov_minutes_frac": same["underprov_minutes_frac"],
        "same_target_replica_hours_over_perfect": same["replica_hours"] / ph,
        "perfect_replica_hours": ph,
        "ours": mine,
        "reactive": reactive,
        "same_target": same,
        "perfect": perfect,
    }
