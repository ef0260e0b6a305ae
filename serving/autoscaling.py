"""The capacity plan as a Ray Serve autoscaling policy.

``feedcast capacity plan`` writes, hour by hour, the expected request rate and the replica
bounds (``*_schedule.yaml``, key ``feed_autoscaling``). With ``FEEDCAST_SERVE_CAPACITY_PLAN``
pointing at such a file, the feed deployment scales with :class:`ForecastPolicy` instead of Ray's
queue-length policy. Each tick it takes the ongoing requests Ray measured, multiplies them by the
growth the plan expects over the next ``lead_s`` seconds (the time a new replica takes to serve;
never below 1) or by the load's own climb over the last ``lead_s`` where that is steeper (a spike
the plan did not know), divides by ``target_ongoing_requests`` (one replica's load at its
target: the replay's 90% of what it serves) and keeps the result inside the bounds of the hour
the new replicas will run in — the rule the replay in ``prefetch/capacity.py`` judges
(:func:`capacity.plan.guided` and ``climb``). Ray applies its own delays and the
deployment's overall bounds on top.

The plan travels in the deployment's config (``policy_kwargs``), and the policy runs in the Serve
controller, one per cluster: nothing is shared between processes. The load's recent history (for
the climb) is the policy's own; after a controller restart it refills within ``lead_s``.
Outside the plan's hours the policy is Ray's rule at the same target with the climb (no
forecast growth, the deployment's bounds) and says so: a ``plan`` of ``expired`` /
``not-started`` in its state, a warning in the controller log and the gauge
``feedcast_capacity_plan_active`` at 0. A load Ray could not measure counts as none (the hour's
floor holds) and shows as ``load: missing`` in the state.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from capacity.plan import CapacityConfig, climb, guided, rate_knots

POLICY = "serving.autoscaling:ForecastPolicy"
log = logging.getLogger("ray.serve")


class PlanError(ValueError):
    """A capacity plan that cannot be run (names the file and the problem)."""


def load_plan(path: Path) -> dict[str, Any]:
    """``policy_kwargs`` for :class:`ForecastPolicy` from a schedule file, checked."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise PlanError(f"capacity plan {path}: cannot read it ({exc})") from exc
    rows = raw.get("feed_autoscaling") if isinstance(raw, dict) else None
    if not isinstance(rows, list) or not rows:
        raise PlanError(f"capacity plan {path}: no 'feed_autoscaling' rows")
    config = raw.get("config") or {}
    default = CapacityConfig()
    try:
        kwargs: dict[str, Any] = {
            "hours": [str(r["hour"]) for r in rows],
            "expected_rps": [float(r["expected_rps"]) for r in rows],
            "min_replicas": [int(r["min_replicas"]) for r in rows],
            "max_replicas": [int(r["max_replicas"]) for r in rows],
            "lead_s": 60.0 * float(config.get("lag_min", default.lag_min)),
            "climb_threshold": float(config.get("climb_threshold", default.climb_threshold)),
            "climb_window_s": 60.0
            * float(config.get("climb_window_min", default.climb_window_min)),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise PlanError(
            f"capacity plan {path}: every row needs hour, expected_rps, min_replicas and "
            f"max_replicas ({exc!r})"
        ) from exc
    try:
        ForecastPolicy(**kwargs)  # the same checks the controller will make
    except ValueError as exc:
        raise PlanError(f"capacity plan {path}: {exc}") from exc
    return kwargs


class ForecastPolicy:
    """Ray Serve class-callable autoscaling policy; see the module's docstring."""

    def __init__(
        self,
        hours: list[str],
        expected_rps: list[float],
        min_replicas: list[int],
        max_replicas: list[int],
        lead_s: float = 300.0,
        climb_threshold: float = 1.05,
        climb_window_s: float = 300.0,
    ) -> None:
        n = len(hours)
        if not n or not (len(expected_rps) == len(min_replicas) == len(max_replicas) == n):
            raise ValueError("hours, expected_rps, min_replicas and max_replicas differ in length")
        starts = pd.DatetimeIndex(pd.to_datetime(hours, utc=True))
        step = np.diff(starts.asi8) / 1e9
        if n > 1 and not np.all(step == 3600.0):
            raise ValueError("hours must be consecutive whole hours")
        self.rate = np.asarray(expected_rps, np.float64)
        self.lo = np.asarray(min_replicas, np.int64)
        self.hi = np.asarray(max_replicas, np.int64)
        if not np.all(np.isfinite(self.rate)) or np.any(self.rate < 0):
            raise ValueError("expected_rps must be finite and ≥ 0")
        if np.any(self.lo < 1) or np.any(self.hi < self.lo):
            raise ValueError("need 1 ≤ min_replicas ≤ max_replicas in every hour")
        if not (math.isfinite(lead_s) and lead_s >= 0):
            raise ValueError("lead_s must be ≥ 0")
        if not (climb_threshold >= 1.0 and climb_window_s > 0):
            raise ValueError("climb_threshold must be ≥ 1 and climb_window_s > 0")
        self.start = float(starts[0].timestamp())
        self.lead_s = lead_s
        self.lead_h = lead_s / 3600.0
        self.climb_threshold = climb_threshold
        self.window_s = climb_window_s
        self._loads: deque[tuple[float, float]] = deque()
        self.knots = rate_knots(self.rate)
        self.centres = np.arange(n) + 0.5
        self._said: str | None = None
        self._gauges: Any = None

    def growth(self, t_h: float) -> float:
        """The plan's rate ``lead_s`` after ``t_h`` hours into it over the rate at ``t_h``."""
        now, then = np.interp([t_h, t_h + self.lead_h], self.centres, self.knots)
        return float(then / now) if now > 0 else 1.0

    def climb(self, now: float, load: float, per_replica: float) -> float:
        """The load's own climb: its mean over the last ``climb_window_s`` over its mean as
        ``lead_s`` earlier, that at least one replica's load (1 until that long a history is
        kept, or below the threshold)."""
        if not self._loads or now - self._loads[-1][0] >= 1.0:  # a sample a second at most
            self._loads.append((now, load))
        while self._loads and self._loads[0][0] < now - self.lead_s - self.window_s:
            self._loads.popleft()
        t, v = np.array(self._loads).T
        then = (t <= now - self.lead_s) & (t > now - self.lead_s - self.window_s)
        if not then.any():
            return 1.0
        recent = v[t > now - self.window_s].mean()
        return float(climb(recent, v[then].mean(), self.climb_threshold, per_replica))

    def decide(self, now: float, load: float, per_replica: float) -> tuple[int, dict[str, Any]]:
        """Replicas for ``load`` ongoing requests at ``now`` (epoch s), ``per_replica`` each.
        The bounds are those of the hour the replicas will run in (``lead_s`` on), as in the
        replay; a load that is not a number counts as none (the hour's floor holds)."""
        missing = not math.isfinite(load)
        load = 0.0 if missing else max(load, 0.0)
        t_h = (now - self.start) / 3600.0
        hour = math.floor(t_h)
        rise = self.climb(now, load, per_replica)
        if 0 <= hour < len(self.rate):
            g = self.growth(t_h)
            run = min(math.floor(t_h + self.lead_h), len(self.rate) - 1)
            want = int(guided(load, max(g, rise), per_replica))
            want = int(np.clip(want, self.lo[run], self.hi[run]))
            state = {"plan": "active", "hour": hour, "growth": round(g, 4), "climb": round(rise, 4)}
        else:
            want = int(guided(load, rise, per_replica))
            state = {
                "plan": "expired" if hour >= len(self.rate) else "not-started",
                "climb": round(rise, 4),
            }
        if missing:
            state["load"] = "missing"
        self._report(state)
        return want, state

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        now = ctx.current_time if ctx.current_time is not None else time.time()
        load = ctx.total_num_requests
        load = float("nan") if load is None else float(load)
        want, state = self.decide(now, load, float(ctx.config.get_target_ongoing_requests()))
        return want, {**ctx.policy_state, "feedcast": state}

    def _report(self, state: dict[str, Any]) -> None:
        mode = state["plan"]
        if mode != self._said:
            if mode != "active":
                log.warning("capacity plan %s: scaling on the load alone", mode)
            self._said = mode
        if self._gauges is None:
            self._gauges = _gauges()
        if self._gauges:
            active, growth = self._gauges
            active.set(1.0 if mode == "active" else 0.0)
            growth.set(float(state.get("growth", 1.0)))


def _gauges() -> tuple[Any, ...]:
    """The policy's gauges, exported with Ray's metrics; none where Ray is not running."""
    import ray  # lazy: ~0.25 s at import; the CLI's plan check and tests load this without Ray

    if not ray.is_initialized():
        return ()
    from ray.util.metrics import Gauge  # lazy: as ray above

    return (
        Gauge("feedcast_capacity_plan_active", "1 while the capacity plan scales the feed"),
        Gauge("feedcast_capacity_plan_growth", "Growth the plan expects before a new replica"),
    )
