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

Either way the feed keeps at least the replicas of a **floor lease** in force (``core/lease.py``:
one Redis key with its own expiry, granted by the alert responder when the live rate leaves the
forecast band upwards): the decision is the maximum of the plan's (or Ray's rule, without a
plan: :class:`LeasedQueuePolicy`) and the lease's. :class:`FloorLease` reads it at most once a
second (a Redis that does not answer is skipped for ten, and the state says ``unreadable``: the
floor then is what it would be without a lease), and the gauge ``feedcast_replica_floor_lease``
shows it.

The same file holds the upload tier's floor (key ``upload_workers``: the workers the forecast
uploads of each hour need). :class:`UploadFloorPolicy` scales the upload deployment on the load
Ray measured, as Ray's rule does, but never below the workers of the hour the new ones will run
in (``lead_s`` on, as the feed's), nor above the deployment's own ``max_replicas`` (a floor above
it is clipped, and the state says so): a rush of uploads in a busy hour does not first queue
behind a downscaled tier. Outside the plan's hours it is the load alone, ``plan: expired`` /
``not-started`` in its state and the gauge ``feedcast_upload_floor`` at 0.
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
import redis
import yaml
from redis.backoff import NoBackoff
from redis.retry import Retry

from capacity.plan import CapacityConfig, climb, guided, rate_knots
from core.lease import Lease, current

POLICY = "serving.autoscaling:ForecastPolicy"
LEASED_POLICY = "serving.autoscaling:LeasedQueuePolicy"
UPLOAD_POLICY = "serving.autoscaling:UploadFloorPolicy"
log = logging.getLogger("ray.serve")


class PlanError(ValueError):
    """A capacity plan that cannot be run (names the file and the problem)."""


def _read(path: Path) -> dict[str, Any]:
    """A schedule file's top-level mapping ({} where it is not one)."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise PlanError(f"capacity plan {path}: cannot read it ({exc})") from exc
    return raw if isinstance(raw, dict) else {}


def _config(raw: dict[str, Any], key: str) -> float:
    """A planner setting from the schedule's ``config``, else the planner's default."""
    config = raw.get("config") or {}
    return float(config.get(key, getattr(CapacityConfig(), key)))


def load_plan(path: Path) -> dict[str, Any]:
    """``policy_kwargs`` for :class:`ForecastPolicy` from a schedule file, checked."""
    raw = _read(path)
    rows = raw.get("feed_autoscaling")
    if not isinstance(rows, list) or not rows:
        raise PlanError(f"capacity plan {path}: no 'feed_autoscaling' rows")
    try:
        kwargs: dict[str, Any] = {
            "hours": [str(r["hour"]) for r in rows],
            "expected_rps": [float(r["expected_rps"]) for r in rows],
            "min_replicas": [int(r["min_replicas"]) for r in rows],
            "max_replicas": [int(r["max_replicas"]) for r in rows],
            "lead_s": 60.0 * _config(raw, "lag_min"),
            "climb_threshold": _config(raw, "climb_threshold"),
            "climb_window_s": 60.0 * _config(raw, "climb_window_min"),
        }
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise PlanError(
            f"capacity plan {path}: every row needs hour, expected_rps, min_replicas and "
            f"max_replicas ({exc!r})"
        ) from exc
    return _checked(ForecastPolicy, kwargs, path)


def load_upload_plan(path: Path) -> dict[str, Any] | None:
    """``policy_kwargs`` for :class:`UploadFloorPolicy` from a schedule file, checked; None
    where it has no ``upload_workers`` rows (the upload tier then keeps Ray's rule). Rows
    without ``expected_uploads`` (schedules written before them) still give the floor; the
    uploads are kept only where every row has them."""
    raw = _read(path)
    rows = raw.get("upload_workers")
    if rows is None or rows == []:
        return None
    if not isinstance(rows, list):
        raise PlanError(f"capacity plan {path}: 'upload_workers' is not a list of rows")
    try:
        kwargs: dict[str, Any] = {
            "hours": [str(r["hour"]) for r in rows],
            "workers": [int(r["workers"]) for r in rows],
            "lead_s": 60.0 * _config(raw, "lag_min"),
        }
        if all("expected_uploads" in r for r in rows):
            kwargs["expected_uploads"] = [float(r["expected_uploads"]) for r in rows]
        if raw.get("bytes_per_post") is not None:
            kwargs["bytes_per_post"] = float(raw["bytes_per_post"])
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise PlanError(
            f"capacity plan {path}: every upload_workers row needs hour and workers, numbers "
            f"where numbers go ({exc!r})"
        ) from exc
    return _checked(UploadFloorPolicy, kwargs, path)


def _checked(policy: type, kwargs: dict[str, Any], path: Path) -> dict[str, Any]:
    """``kwargs`` once the policy takes them: the same checks the controller will make."""
    try:
        policy(**kwargs)
    except ValueError as exc:
        raise PlanError(f"capacity plan {path}: {exc}") from exc
    return kwargs


def _first_hour(hours: list[str]) -> float:
    """The epoch second the plan starts at, checking its hours are consecutive whole hours."""
    starts = pd.DatetimeIndex(pd.to_datetime(hours, utc=True))
    step = np.diff(starts.asi8) / 1e9
    if len(starts) > 1 and not np.all(step == 3600.0):
        raise ValueError("hours must be consecutive whole hours")
    return float(starts[0].timestamp())


class FloorLease:
    """The replica-floor lease (``core/lease.py``) as the controller sees it: read from Redis
    at most every ``every_s`` with a ``timeout_s`` socket, skipped ``backoff_s`` after a
    failure, so that a Redis that hangs costs the control loop a fraction of a second now and
    then, never each tick."""

    def __init__(
        self,
        host: str,
        port: int,
        db: int,
        key: str,
        every_s: float = 1.0,
        timeout_s: float = 0.2,
        backoff_s: float = 10.0,
    ) -> None:
        self.host, self.port, self.db, self.key = host, port, db, key
        self.every_s, self.timeout_s, self.backoff_s = every_s, timeout_s, backoff_s
        self._client: redis.Redis | None = None
        self._next = -math.inf
        self._lease: Lease | None = None
        self._failed = False

    def floor(self, now: float) -> tuple[int, str]:
        """The leased replicas at ``now`` (0 without a lease) and ``held`` / ``none`` /
        ``unreadable``."""
        if now >= self._next:
            try:
                if self._client is None:
                    self._client = redis.Redis(
                        host=self.host,
                        port=self.port,
                        db=self.db,
                        socket_timeout=self.timeout_s,
                        socket_connect_timeout=self.timeout_s,
                        retry=Retry(NoBackoff(), 0),
                    )
                self._lease, self._failed = current(self._client, self.key, now), False
                self._next = now + self.every_s
            except redis.RedisError:
                self._lease, self._failed = None, True
                self._next = now + self.backoff_s
        if self._lease is not None and self._lease.until > now:
            return self._lease.replicas, "held"
        return 0, "unreadable" if self._failed else "none"


def _leased(
    want: int, now: float, lease: FloorLease | None, state: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    """``want`` raised to the lease's floor; the state says which."""
    if lease is None:
        return want, state
    floor, how = lease.floor(now)
    state["lease"] = {"status": how, "replicas": floor} if floor else how
    if floor > want:
        state["lease_raised"] = True
    return max(want, floor), state


class LeasedQueuePolicy:
    """Ray's own rule (``replica_queue_length_autoscaling_policy``: the same decision as with no
    policy set) with the floor lease on top: the feed's policy when there is no capacity plan.
    ``lease``: :class:`FloorLease`'s arguments."""

    def __init__(self, lease: dict[str, Any]) -> None:
        self.lease = FloorLease(**lease)
        self._gauge: Any = None

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        from ray.serve.autoscaling_policy import replica_queue_length_autoscaling_policy

        want, _ = replica_queue_length_autoscaling_policy(ctx)
        now = ctx.current_time if ctx.current_time is not None else time.time()
        decided, state = _leased(math.ceil(want), now, self.lease, {"plan": "none"})
        _report_lease(self, state)
        return decided, {**ctx.policy_state, "feedcast": state}


def _report_lease(policy: Any, state: dict[str, Any]) -> None:
    """``feedcast_replica_floor_lease``: the replicas leased now (0 without a lease)."""
    if policy._gauge is None:
        policy._gauge = _gauges(
            ("feedcast_replica_floor_lease", "Feed replicas the responder's lease holds now")
        )
    if policy._gauge:
        held = state.get("lease")
        policy._gauge[0].set(float(held["replicas"]) if isinstance(held, dict) else 0.0)


class ForecastPolicy:
    """Ray Serve class-callable autoscaling policy; see the module's docstring. ``lease``:
    :class:`FloorLease`'s arguments (None: no lease is read)."""

    def __init__(
        self,
        hours: list[str],
        expected_rps: list[float],
        min_replicas: list[int],
        max_replicas: list[int],
        lead_s: float = 300.0,
        climb_threshold: float = 1.05,
        climb_window_s: float = 300.0,
        lease: dict[str, Any] | None = None,
    ) -> None:
        n = len(hours)
        if not n or not (len(expected_rps) == len(min_replicas) == len(max_replicas) == n):
            raise ValueError("hours, expected_rps, min_replicas and max_replicas differ in length")
        self.start = _first_hour(hours)
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
        self.lead_s = lead_s
        self.lead_h = lead_s / 3600.0
        self.climb_threshold = climb_threshold
        self.window_s = climb_window_s
        self._loads: deque[tuple[float, float]] = deque()
        self.knots = rate_knots(self.rate)
        self.centres = np.arange(n) + 0.5
        self._said: str | None = None
        self._gauges: Any = None
        self._gauge: Any = None
        self.lease = FloorLease(**lease) if lease else None

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
        want, state = _leased(want, now, self.lease, state)
        self._report(state)
        return want, state

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        want, state = self.decide(*_measured(ctx))
        return want, {**ctx.policy_state, "feedcast": state}

    def _report(self, state: dict[str, Any]) -> None:
        if self.lease is not None:
            _report_lease(self, state)
        self._said = _say_mode(self._said, state["plan"], "the feed")
        if self._gauges is None:
            self._gauges = _gauges(
                ("feedcast_capacity_plan_active", "1 while the capacity plan scales the feed"),
                ("feedcast_capacity_plan_growth", "Growth the plan expects before a new replica"),
            )
        if self._gauges:
            active, growth = self._gauges
            active.set(1.0 if state["plan"] == "active" else 0.0)
            growth.set(float(state.get("growth", 1.0)))


class UploadFloorPolicy:
    """Ray Serve class-callable autoscaling policy for the upload tier; see the module's
    docstring. ``workers`` is the plan's floor per hour; ``max_replicas`` the deployment's own
    ceiling (None: Ray's bounds only). ``expected_uploads`` (uploads per hour) and
    ``bytes_per_post`` travel with the plan for the storage gauge (:mod:`media.storage`); the
    decision does not use them."""

    def __init__(
        self,
        hours: list[str],
        workers: list[int],
        lead_s: float = 300.0,
        max_replicas: int | None = None,
        expected_uploads: list[float] | None = None,
        bytes_per_post: float | None = None,
    ) -> None:
        if not hours or len(workers) != len(hours):
            raise ValueError("hours and workers differ in length")
        if expected_uploads is not None and len(expected_uploads) != len(hours):
            raise ValueError("hours and expected_uploads differ in length")
        self.start = _first_hour(hours)
        self.workers = np.asarray(workers, np.int64)
        if np.any(self.workers < 0):
            raise ValueError("workers must be ≥ 0 in every hour")
        uploads = np.asarray(expected_uploads or [], np.float64)
        if not np.all(np.isfinite(uploads)) or np.any(uploads < 0):
            raise ValueError("expected_uploads must be finite and ≥ 0")
        if bytes_per_post is not None and not (
            math.isfinite(bytes_per_post) and bytes_per_post >= 0
        ):
            raise ValueError("bytes_per_post must be finite and ≥ 0")
        if not (math.isfinite(lead_s) and lead_s >= 0):
            raise ValueError("lead_s must be ≥ 0")
        if max_replicas is not None and max_replicas < 1:
            raise ValueError("max_replicas must be ≥ 1")
        self.lead_s = lead_s
        self.max_replicas = max_replicas
        self._said: str | None = None
        self._gauge: Any = None

    def decide(self, now: float, load: float, per_replica: float) -> tuple[int, dict[str, Any]]:
        """Workers for ``load`` ongoing uploads at ``now`` (epoch s), ``per_replica`` each:
        what the load needs, at least the plan's workers for the hour the new workers will run
        in (``lead_s`` on), at most ``max_replicas`` (the floor too: ``clipped`` in the state).
        A load that is not a number counts as none (the floor holds)."""
        missing = not math.isfinite(load)
        want = math.ceil(max(0.0 if missing else load, 0.0) / per_replica)
        hour = math.floor((now - self.start) / 3600.0)
        cap = self.max_replicas if self.max_replicas is not None else math.inf
        floor = 0
        state: dict[str, Any]
        if 0 <= hour < len(self.workers):
            run = min(math.floor((now + self.lead_s - self.start) / 3600.0), len(self.workers) - 1)
            planned = int(self.workers[run])
            floor = int(min(planned, cap))
            want = max(want, floor)
            state = {"plan": "active", "hour": hour, "floor": planned, "clipped": floor < planned}
        else:
            state = {"plan": "expired" if hour >= len(self.workers) else "not-started"}
        if missing:
            state["load"] = "missing"
        self._report(state["plan"], floor)
        return int(min(want, cap)), state

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        want, state = self.decide(*_measured(ctx))
        return want, {**ctx.policy_state, "feedcast": state}

    def _report(self, mode: str, floor: int) -> None:
        """The floor in force (after the clip; 0 outside the plan) as ``feedcast_upload_floor``."""
        self._said = _say_mode(self._said, mode, "the upload tier")
        if self._gauge is None:
            self._gauge = _gauges(("feedcast_upload_floor", "Upload workers the plan holds now"))
        if self._gauge:
            self._gauge[0].set(float(floor))


def upload_autoscaling(
    settings_min: int, settings_max: int, plan_kwargs: dict[str, Any] | None
) -> dict[str, Any]:
    """The upload deployment's ``autoscaling_config``: Ray's rule at one upload per worker
    between the settings' bounds, or, with a plan (:func:`load_upload_plan`), the floor policy
    capped at ``settings_max``, from the plan's lowest floor clipped into the settings' range
    (Ray keeps a policy's decisions inside these bounds). Quick up, slow down: an upload waits
    on a worker, an idle worker costs little."""
    config: dict[str, Any] = {
        "min_replicas": settings_min,
        "max_replicas": settings_max,
        "target_ongoing_requests": 1,
        "upscale_delay_s": 5,
        "downscale_delay_s": 120,
    }
    if plan_kwargs is not None:
        lowest = min(int(w) for w in plan_kwargs["workers"])
        config["min_replicas"] = max(settings_min, min(lowest, settings_max))
        config["policy"] = {
            "policy_function": UPLOAD_POLICY,
            "policy_kwargs": {**plan_kwargs, "max_replicas": settings_max},
        }
    return config


def _measured(ctx: Any) -> tuple[float, float, float]:
    """From Ray's autoscaling context: now (epoch s), the ongoing requests it measured (NaN
    where it could not) and one replica's target load."""
    now = ctx.current_time if ctx.current_time is not None else time.time()
    load = ctx.total_num_requests
    load = float("nan") if load is None else float(load)
    return now, load, float(ctx.config.get_target_ongoing_requests())


def _say_mode(said: str | None, mode: str, what: str) -> str:
    """Warn in the controller's log once when a policy leaves its plan; the mode now."""
    if mode != said and mode != "active":
        log.warning("capacity plan %s: scaling %s on the load alone", mode, what)
    return mode


def _gauges(*specs: tuple[str, str]) -> tuple[Any, ...]:
    """Gauges (name, description) exported with Ray's metrics; none where Ray is not running."""
    import ray  # lazy: ~0.25 s at import; the CLI's plan check and tests load this without Ray

    if not ray.is_initialized():
        return ()
    from ray.util.metrics import Gauge  # lazy: as ray above

    return tuple(Gauge(name, description) for name, description in specs)
