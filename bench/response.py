"""``python -m bench.run response``: the replica-floor lease replayed on the capacity backtest's
traffic (``capacity/response.py``): the same forecast plan with and without the response, at
15- and 30-minute lags, on every traffic variant (the ``event`` variant's one-off spikes are
what the band alert is for; the others show what the response costs where nothing happens).

Per variant and fold (the last ``FOLDS`` weeks of a 16-week series, each planned by a forecaster
fitted on the weeks before it, as ``bench/capacity.py``): the plan's minutes, the band alert, the
lease's grants, and each policy's under-provisioned minutes and replica-hours.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from capacity import response
from capacity.anomaly import band_bounds
from capacity.backtest import REQUESTS_PER_HOUR
from capacity.plan import CapacityConfig, minute_demand
from simulator.traffic import VARIANTS, TrafficConfig, generate
from training.forecast import Forecaster, ForecastParams

LAGS = (15, 30)
LEASES = (15, 60)  # minutes a grant lasts past its last renewal
HEADROOMS = (1.0, 1.5)  # the lease sized for the live load, or half again
FOLDS, WEEKS, SEED = 3, 16, 0


def _fold_inputs(variant: str) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(demand per minute, plan rate per hour, band high per hour) of each fold."""
    cfg = CapacityConfig()
    traffic = generate(
        TrafficConfig(variant=variant, weeks=WEEKS, seed=SEED, requests_per_hour=REQUESTS_PER_HOUR)
    )
    y = traffic.requests.astype(np.float64)
    out = []
    for k in range(FOLDS, 0, -1):
        origin = len(y) - 168 * k - 1
        qs = tuple(sorted({0.1, 0.5, 0.9, cfg.plan_quantile}))
        model = Forecaster.fit(
            y[: origin + 1], traffic.index[: origin + 1], ForecastParams(quantiles=qs)
        )
        q = model.predict(y, traffic.index, origin)
        _, high = band_bounds(q[0.5].to_numpy(), q[0.1].to_numpy(), q[0.9].to_numpy())
        demand = minute_demand(traffic.requests[origin + 1 : origin + 169], seed=SEED * 100 + k)
        out.append((demand, q[cfg.plan_quantile].to_numpy(), high))
    return out


def _summary(per: list[dict[str, Any]]) -> dict[str, Any]:
    """The folds together."""

    def total(side: str, key: str) -> float:
        return float(sum(p[side][key] for p in per))

    out = {
        "underprov_minutes_without": int(total("without", "underprov_minutes")),
        "underprov_minutes_with": int(total("with_response", "underprov_minutes")),
        # capacity.response.oracle_floor: any response to the live rate, detected at once
        "underprov_minutes_oracle": int(total("oracle", "underprov_minutes")),
        "replica_hours_oracle": total("oracle", "replica_hours"),
        "unserved_requests_without": total("without", "unserved_requests"),
        "unserved_requests_with": total("with_response", "unserved_requests"),
        "replica_hours_without": total("without", "replica_hours"),
        "replica_hours_with": total("with_response", "replica_hours"),
        "short_minutes_leased": sum(p["short_minutes_leased"] for p in per),
        "short_minutes_unleased": sum(p["short_minutes_unleased"] for p in per),
        "alert_episodes": sum(p["alert_episodes"] for p in per),
        # the plan's short minutes: in the band, within a lag of crossing it, or reachable
        "plan_short_minutes": {
            k: sum(p["plan_short_minutes"][k] for p in per) for k in per[0]["plan_short_minutes"]
        },
        "grants": sum(p["grants"] for p in per),
    }
    out["underprov_cut"] = 1 - out["underprov_minutes_with"] / max(
        1, out["underprov_minutes_without"]
    )
    out["replica_hours_extra"] = out["replica_hours_with"] / out["replica_hours_without"] - 1
    return out


def run() -> dict[str, Any]:
    out: dict[str, Any] = {
        "lags": list(LAGS), "leases_min": list(LEASES), "headrooms": list(HEADROOMS), "variants": {}
    }  # fmt: skip
    for variant in VARIANTS:
        print(f"response: {variant}, fitting {FOLDS} folds", flush=True)
        folds = _fold_inputs(variant)
        rows: dict[str, Any] = {}
        for lag in LAGS:
            cfg = replace(CapacityConfig(), lag_min=lag)
            for lease in LEASES:
                for headroom in HEADROOMS:
                    key = f"lag_{lag}_lease_{lease}_headroom_{headroom:g}"
                    per = [
                        response.replay(d, r, h, cfg, lease_min=lease, headroom=headroom)
                        for d, r, h in folds
                    ]
                    rows[key] = r = _summary(per)
                    print(f"  {variant} {key}: {r['underprov_minutes_without']} → "
                          f"{r['underprov_minutes_with']} under-provisioned minutes "
                          f"(an instant oracle: {r['underprov_minutes_oracle']}; the plan's: "
                          f"{r['plan_short_minutes']}) "
                          f"({r['short_minutes_unleased']} with no lease in force), "
                          f"+{100 * r['replica_hours_extra']:.2f}% replica-hours, "
                          f"{r['alert_episodes']} alerts", flush=True)  # fmt: skip
        out["variants"][variant] = rows
    return out
