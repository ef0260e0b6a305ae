"""The automated response replayed minute by minute: traffic above the forecast band leases a
replica floor (``pipelines/responder.py``, ``core/lease.py``), and the feed runs the maximum of
the plan's replicas and the lease's. Pure: arrays in, replicas out.

The replay follows the live loop step by step:

- **detect** (:func:`above_band`): the ``band`` detector of :mod:`capacity.anomaly`, upper side
  only, with the knobs the live rule uses (``monitoring/rules.yml``: a 5-minute count over the
  band's high edge widened by 3 Poisson standard deviations, held 2 minutes);
- **grant** (:func:`lease_floor`): at the alert's start and every ``renew_min`` while it fires
  (Alertmanager re-sends a firing alert; the responder renews the lease and never lowers it),
  the replicas the last 5 minutes' load needs at the plan's target utilisation;
- **arrive**: leased replicas serve ``lag_min`` after the grant, as every other decision's do, and
  the lease lapses ``lease_min`` after its last renewal.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from capacity.anomaly import _rolling_sum, episodes, sustained
from capacity.plan import CapacityConfig, judge, max_replicas, planned_replicas, replica_schedule

WINDOW_MIN, Z, HOLD_MIN = 5, 3.0, 2  # the live rule's knobs (monitoring/rules.yml)


def minute_band(hourly: np.ndarray) -> np.ndarray:
    """An hourly count series as per-minute counts, linear between the hours' midpoints (as the
    responder exports the band and ``bench/anomaly.py`` judges it)."""
    h = np.asarray(hourly, np.float64)
    t = np.arange(len(h) * 60) / 60.0
    return np.interp(t, np.arange(len(h)) + 0.5, h) / 60.0


def above_band(demand_min: np.ndarray, high_min: np.ndarray) -> np.ndarray:
    """Per minute: the alert firing (the 5-minute count over the widened high edge, held)."""
    obs = _rolling_sum(np.asarray(demand_min, np.float64), WINDOW_MIN)
    high = _rolling_sum(np.asarray(high_min, np.float64), WINDOW_MIN)
    return sustained(obs > high + Z * np.sqrt(np.maximum(high, 0.0)), HOLD_MIN)


def lease_floor(
    demand_min: np.ndarray,
    alert: np.ndarray,
    cfg: CapacityConfig,
    *,
    lease_min: int,
    renew_min: int = 5,
    ceiling: int | None = None,
    headroom: float = 1.0,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The leased floor in force each minute (0 where none) and the grants made: each the
    replicas ``headroom`` times the last 5 minutes' load needs."""
    d = np.asarray(demand_min, np.float64)
    n = len(d)
    per_replica = cfg.replica_rps * 60.0 * cfg.inbound_target
    floor = np.zeros(n, np.int64)
    grants: list[dict[str, Any]] = []
    for start, end in episodes(alert):
        level = 0
        for t in range(start, end, max(1, renew_min)):
            recent = float(d[max(0, t - WINDOW_MIN + 1) : t + 1].mean())
            level = max(level, int(np.ceil(recent * headroom / per_replica)))  # never lowered
            if ceiling is not None:
                level = min(level, ceiling)
            lo, hi = t + cfg.lag_min, min(n, t + lease_min)  # replicas arrive after the lag
            if lo < hi:
                floor[lo:hi] = np.maximum(floor[lo:hi], level)
            grants.append({"minute": t, "replicas": level})
    return floor, grants


def oracle_floor(
    demand_min: np.ndarray, cfg: CapacityConfig, *, headroom: float = 1.0
) -> np.ndarray:
    """The best any reactive floor can do: each minute's load known the minute it happens, no
    detector, no hold, no ceiling, and the replicas for it (``headroom`` times it) serving one
    lag later, as every decision's do. A short minute this floor leaves is out of reach of any
    response to the live rate, however fast its alert."""
    d = np.asarray(demand_min, np.float64)
    per_replica = cfg.replica_rps * 60.0 * cfg.inbound_target
    need = np.ceil(d * headroom / per_replica).astype(np.int64)
    floor = np.zeros(len(d), np.int64)
    if cfg.lag_min < len(d):
        floor[cfg.lag_min :] = need[: len(d) - cfg.lag_min]
    return floor


def reach(
    demand_min: np.ndarray, replicas_min: np.ndarray, high_min: np.ndarray, cfg: CapacityConfig
) -> dict[str, int]:
    """Where ``replicas_min``'s short minutes fall, as seen by any response to the band: the
    demand still inside the band (its raw high edge: nothing anomalous to respond to), within
    one lag of the demand's first minute above it (nothing triggered then could serve yet,
    however fast its detector), or after that (reachable)."""
    d = np.asarray(demand_min, np.float64)
    above = d > np.asarray(high_min, np.float64)[: len(d)]
    short = d > np.asarray(replicas_min) * cfg.replica_rps * 60.0
    # each minute's first minute of its run above the band
    idx = np.arange(len(d))
    starts = np.where(above & ~np.r_[False, above[:-1]], idx, 0)
    crossed = np.maximum.accumulate(starts)
    in_band = short & ~above
    early = short & above & (idx < crossed + cfg.lag_min)
    return {
        "in_band": int(in_band.sum()),
        "within_lag_of_crossing": int(early.sum()),
        "reachable": int((short & above).sum() - early.sum()),
    }


def replay(
    demand_min: np.ndarray,
    rate_h: np.ndarray,
    band_high_h: np.ndarray,
    cfg: CapacityConfig,
    *,
    lease_min: int,
    renew_min: int = 5,
    headroom: float = 1.0,
) -> dict[str, Any]:
    """The same plan with and without the response, judged on the same minutes."""
    plan = planned_replicas(demand_min, rate_h, cfg)
    high_min = minute_band(band_high_h)[: len(demand_min)]
    alert = above_band(demand_min, high_min)
    ceiling = int(max_replicas(replica_schedule(np.asarray(rate_h, np.float64), cfg), cfg).max())
    floor, grants = lease_floor(
        demand_min, alert, cfg, lease_min=lease_min, renew_min=renew_min, ceiling=ceiling,
        headroom=headroom,
    )  # fmt: skip
    without = judge(demand_min, plan, cfg)
    with_response = judge(demand_min, np.maximum(plan, floor), cfg)
    oracle = judge(
        demand_min, np.maximum(plan, oracle_floor(demand_min, cfg, headroom=headroom)), cfg
    )
    # Where the response's own short minutes fall: with a lease in force (it was too small),
    # or with none (the alert had not fired one lag before: nothing leased could be there yet).
    leased = np.maximum(plan, floor)
    short = np.asarray(demand_min, np.float64) > leased * cfg.replica_rps * 60.0
    return {
        "without": without,
        "with_response": with_response,
        "oracle": oracle,
        "alert_episodes": len(episodes(alert)),
        "grants": len(grants),
        "leased_minutes": int((floor > plan).sum()),
        "short_minutes_leased": int((short & (floor > 0)).sum()),
        "short_minutes_unleased": int((short & (floor == 0)).sum()),
        "plan_short_minutes": reach(demand_min, plan, high_min, cfg),
    }
