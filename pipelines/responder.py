"""The Alertmanager webhook that acts on alerts: ``python -m pipelines.responder``, started by
``feedcast stack up`` beside Prometheus and Alertmanager (``stack/monitoring.py``).

It listens on 127.0.0.1 only and takes ``POST /alerts`` with the bearer token the stack wrote
for Alertmanager (401 without it). For each firing alert it decides an action
(:func:`plan`), then, unless the same action for the same alert was taken already (Alertmanager
re-sends: idempotent by the alert's fingerprint and start) or less than
``responder_min_interval_s`` ago (rate-limited), takes it, or with ``responder_dry_run`` only
says it would. Every decision is a JSON log line, a count in ``feedcast_responder_actions_total``
(its ``GET /metrics``, scraped by Prometheus) and an entry in Redis that ``feedcast ops status``
shows; ``responder_enabled`` off makes every decision ``off``.

Actions, chosen by the alert's labels (``monitoring/rules.yml``):

- ``page`` (severity ``page``): a human is called; here the log line, the counter and the entry
  are the call.
- ``raise_floor`` (``response: raise_floor``: the live request rate above the forecast band): a
  replica-floor lease for the feed (``core/lease.py``) of the replicas the live rate needs at
  the plan's ``replica_rps``, within the deployment's ceiling, for ``responder_lease_s``;
  renewed (resized, never lowered) each time Alertmanager re-sends the firing alert (every 5
  minutes for this route); the feed's autoscaling policy keeps at least that many while it
  lasts (the maximum with the capacity plan's decision), and it lapses ``responder_lease_s``
  after the last renewal. ``feedcast ops release`` ends it.
- ``rewarm`` (``response: rewarm``: the edge's hit ratio collapsed): the first pages of the
  users likely to come in the next ``responder_rewarm_window_min`` fetched from the feed and
  their media warmed at the edge (``prefetch/ahead.py``, at most ``responder_rewarm_users``), in
  the background, one run at a time; its result is an entry of its own (``finished`` with the
  counts, or ``failed``).

It also exports the retraining pipeline's state (``pipelines/pipeline_series.py``) and the
forecast band the live rates are judged against (``feedcast_forecast_band_rps{series, bound}``,
from the capacity plan's ``forecast_band`` rows: ``monitoring_band_plan``, else
``serve_capacity_plan``; re-read when the file changes).
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import redis
import yaml
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from capacity.anomaly import band_at
from capacity.plan import CapacityConfig
from core import cache, lease
from core.settings import DEV_API_KEY, Settings
from pipelines.pipeline_series import PipelineCollector
from stack import monitoring

log = logging.getLogger("feedcast.responder")
MAX_BODY = 1_000_000  # Alertmanager's batches are small; anything larger is refused (413)
KEEP = 100  # entries of the action log kept in Redis


LIVE_RATE = "feedcast:requests:rate5m"  # the live request rate the band alert judges


@dataclass(frozen=True)
class Action:
    action: str  # page, raise_floor
    alert: str  # the alert's name
    fingerprint: str  # Alertmanager's, with the alert's start: one incident
    severity: str
    summary: str


RESPONSES = ("raise_floor", "rewarm")  # the ``response`` label's values


def plan(payload: dict[str, Any]) -> list[Action]:
    """The actions an Alertmanager webhook payload calls for (firing alerts only): the one its
    ``response`` label names, and a page for severity ``page``."""
    out = []
    for alert in payload.get("alerts") or []:
        if not isinstance(alert, dict) or alert.get("status") != "firing":
            continue
        labels = alert.get("labels") or {}
        kinds = [labels["response"]] if labels.get("response") in RESPONSES else []
        if labels.get("severity") == "page":
            kinds.append("page")
        for kind in kinds:
            out.append(
                Action(
                    action=kind,
                    alert=str(labels.get("alertname", "unnamed")),
                    fingerprint=f"{alert.get('fingerprint', '')}@{alert.get('startsAt', '')}",
                    severity=str(labels.get("severity", "")),
                    summary=str((alert.get("annotations") or {}).get("summary", "")),
                )
            )
    return out


class BandPlan:
    """The capacity plan file whose band and replica sizing the responder uses, re-read when
    its modification time changes; an absent or unreadable file is no plan (no band)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._seen: float | None = None
        self.raw: dict[str, Any] = {}

    def load(self) -> dict[str, Any]:
        try:
            mtime = self.path.stat().st_mtime if self.path else None
        except OSError:
            mtime = None
        if mtime != self._seen:
            self._seen, self.raw = mtime, {}
            if mtime is not None and self.path is not None:
                try:
                    raw = yaml.safe_load(self.path.read_text())
                    self.raw = raw if isinstance(raw, dict) else {}
                except (OSError, yaml.YAMLError) as exc:
                    log.warning("band plan %s unreadable: %s", self.path, exc)
        return self.raw

    def band(self, now: float) -> dict[str, float] | None:
        rows = self.load().get("forecast_band")
        try:
            return band_at(rows, now) if isinstance(rows, list) else None
        except (KeyError, TypeError, ValueError):
            return None

    def replica_rps(self) -> float:
        config = self.load().get("config") or {}
        return float(config.get("replica_rps", CapacityConfig().replica_rps))

    def max_replicas(self, default: int) -> int:
        rows = self.load().get("feed_autoscaling")
        try:
            return max(int(r["max_replicas"]) for r in rows) if rows else default
        except (KeyError, TypeError, ValueError):
            return default


class BandCollector(Collector):
    """``feedcast_forecast_band_rps{series, bound}`` now, and ``feedcast_forecast_band_active``
    (0 outside the plan's hours or without a plan: the band alerts then stay silent)."""

    def __init__(self, band_plan: BandPlan) -> None:
        self.band_plan = band_plan

    def collect(self) -> Iterator[GaugeMetricFamily]:
        band = self.band_plan.band(time.time())
        g = GaugeMetricFamily(
            "feedcast_forecast_band_rps",
            "The forecaster's 95% band for this minute, per second (low, median, high)",
            labels=["series", "bound"],
        )
        for key, value in (band or {}).items():
            series, bound = key.removesuffix("_rps").rsplit("_", 1)
            g.add_metric([series, bound], value)
        yield g
        yield GaugeMetricFamily(
            "feedcast_forecast_band_active",
            "1 while a capacity plan's forecast band covers now",
            value=1.0 if band else 0.0,
        )


def actions_key(s: Settings) -> str:
    return f"feedcast:{s.feast_project}:ops:actions"


class Responder:
    """Takes (or declines) the planned actions; Redis holds what was done."""

    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        registry: CollectorRegistry,
        band_plan: BandPlan | None = None,
    ):
        self.s, self.redis = settings, client
        self.band_plan = band_plan or BandPlan(None)
        self._warming = threading.Lock()
        self.counter = Counter(
            "feedcast_responder_actions",
            "Actions the alert responder decided, by action, alert and outcome (done, dry_run, "
            "already, renewed, rate_limited, off).",
            ("action", "alert", "outcome"),
            registry=registry,
        )

    def _outcome(self, a: Action) -> str:
        s = self.s
        if not s.responder_enabled:
            return "off"
        base = f"feedcast:{s.feast_project}:ops"
        if not self.redis.set(f"{base}:done:{a.action}:{a.fingerprint}", 1, nx=True, ex=86400):
            return "already"
        interval = max(1, int(s.responder_min_interval_s))
        if not self.redis.set(f"{base}:rate:{a.action}:{a.alert}", 1, nx=True, ex=interval):
            return "rate_limited"
        return "dry_run" if s.responder_dry_run else "done"

    def live_rps(self) -> float | None:
        """The live request rate Prometheus has (None where it cannot say)."""
        try:
            value = monitoring.scalar(self.s, LIVE_RATE)
        except (httpx.HTTPError, RuntimeError, ValueError, KeyError, IndexError):
            return None
        return value if value is not None and math.isfinite(value) and value >= 0 else None

    def floor_for(self, live: float | None) -> tuple[int, str]:
        """The replicas the live rate needs at the plan's ``replica_rps``, within the feed's
        ceiling (the plan's, else ``serve_max_replicas``); the ceiling where the rate is
        unknown (a lease lapses on its own: erring high costs replica-minutes, not pages)."""
        ceiling = self.band_plan.max_replicas(self.s.serve_max_replicas)
        if live is None:
            return ceiling, "the ceiling: live rate unknown"
        need = math.ceil(live / self.band_plan.replica_rps())
        return max(1, min(need, ceiling)), f"{live:.2f} req/s at {self.band_plan.replica_rps():g}"

    def _rewarm(self, a: Action) -> dict[str, Any]:
        """Start re-warming the coming window's first pages in the background (one at a time;
        Alertmanager waits for no job); its result becomes an entry of its own when done."""
        if not self._warming.acquire(blocking=False):
            return {"started": False, "why": "a re-warm is still running"}

        def work() -> None:
            from prefetch import ahead  # lazy: the Cassandra driver and the prefetch planner

            try:
                cfg = ahead.AheadConfig(
                    window_min=self.s.responder_rewarm_window_min,
                    max_users=self.s.responder_rewarm_users,
                )
                key = os.environ.get("FEEDCAST_API_KEY", DEV_API_KEY)
                out = ahead.run(self.s, cfg, api_key=key)
                detail: dict[str, Any] = {
                    k: getattr(out, k)
                    for k in ("users_picked", "pages_warmed", "objects_warmed",
                              "feed_failures", "warm_failures")
                } | {"seconds": round(out.seconds, 1)}  # fmt: skip
                outcome = "finished"
            except Exception as exc:
                detail, outcome = {"error": f"{type(exc).__name__}: {exc}"[:500]}, "failed"
            finally:
                self._warming.release()
            entry = {**asdict(a), "action": "rewarm", "outcome": outcome,
                     "at": round(time.time(), 3), "detail": detail}  # fmt: skip
            self.counter.labels("rewarm", a.alert, outcome).inc()
            try:
                record(self.s, self.redis, entry)
            except redis.RedisError:
                log.warning("responder %s (not recorded: Redis unreachable)", json.dumps(entry))

        threading.Thread(target=work, name="rewarm", daemon=True).start()
        return {
            "started": True,
            "window_min": self.s.responder_rewarm_window_min,
            "max_users": self.s.responder_rewarm_users,
        }

    def _do(self, a: Action) -> dict[str, Any]:
        """Carry out ``a`` (outcome ``done``); what was done, for the entry."""
        if a.action == "rewarm":
            return self._rewarm(a)
        if a.action != "raise_floor":
            return {}
        replicas, why = self.floor_for(self.live_rps())
        granted, old = lease.grant(
            self.redis, lease.lease_key(self.s), replicas, self.s.responder_lease_s, a.alert
        )
        return {
            "replicas": granted.replicas,
            "sized": why,
            "until": round(granted.until, 3),
            "extended": old is not None,
        }

    def handle(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        """Decide and record every action of ``payload``; what was decided."""
        decided = []
        for a in plan(payload):
            outcome = self._outcome(a)
            if outcome == "already" and a.action == "raise_floor" and not self.s.responder_dry_run:
                outcome = "renewed"  # Alertmanager re-sends while it fires: the lease goes on
            entry = {**asdict(a), "outcome": outcome, "at": round(time.time(), 3)}
            if outcome in ("done", "renewed"):
                entry["detail"] = self._do(a)
            if outcome in ("done", "dry_run"):  # repeats are counted, not logged again
                record(self.s, self.redis, entry)
            self.counter.labels(a.action, a.alert, outcome).inc()
            decided.append(entry)
        return decided


def record(s: Settings, client: redis.Redis, entry: dict[str, Any]) -> None:
    """An action into the log ``ops status`` shows (the last ``KEEP``) and the process log."""
    pipe = client.pipeline(transaction=False)
    pipe.lpush(actions_key(s), json.dumps(entry))
    pipe.ltrim(actions_key(s), 0, KEEP - 1)
    pipe.execute()
    log.warning("responder %s", json.dumps(entry))


def recent_actions(s: Settings, client: redis.Redis, n: int = 10) -> list[dict[str, Any]]:
    """The last ``n`` actions taken (or that a dry run would have taken), newest first."""
    rows: Any = client.lrange(actions_key(s), 0, n - 1)
    return [json.loads(x) for x in rows]


def make_server(s: Settings, responder: Responder, registry: CollectorRegistry, token: str):
    """The HTTP server (not started): ``POST /alerts``, ``GET /metrics``, ``GET /health``."""

    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body: bytes, kind: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _problem(self, code: int, detail: str) -> None:
            self._send(code, json.dumps({"detail": detail}).encode())

        def do_GET(self) -> None:
            if self.path == "/health":
                self._send(200, b'{"status": "ok", "service": "feedcast-responder"}')
            elif self.path == "/metrics":
                self._send(200, generate_latest(registry), "text/plain; version=0.0.4")
            else:
                self._problem(404, f"no route {self.path}")

        def do_POST(self) -> None:
            if self.path != "/alerts":
                self._problem(404, f"no route {self.path}")
                return
            given = self.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                self._problem(401, "missing or wrong bearer token")
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._problem(413, f"body over {MAX_BODY} bytes")
                return
            try:
                payload = json.loads(self.rfile.read(length) or b"null")
                if not isinstance(payload, dict):
                    raise ValueError("not a JSON object")
            except ValueError as exc:
                self._problem(400, f"not an Alertmanager webhook payload: {exc}")
                return
            try:
                decided = responder.handle(payload)
            except redis.RedisError as exc:  # Alertmanager retries a failed delivery
                self._problem(503, f"Redis unavailable, nothing done: {type(exc).__name__}")
                return
            self._send(200, json.dumps({"actions": decided}).encode())

        def log_message(self, format: str, *args: Any) -> None:
            log.debug(format, *args)

    server = ThreadingHTTPServer(("127.0.0.1", s.responder_port), Handler)
    server.daemon_threads = True
    return server


def main() -> None:  # pragma: no cover — run by the stack as a process
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
    s = Settings()
    token = Path(sys.argv[1]).read_text().strip()
    registry = CollectorRegistry()
    band_plan = BandPlan(s.monitoring_band_plan or s.serve_capacity_plan)
    registry.register(BandCollector(band_plan))
    registry.register(PipelineCollector(s.pipeline_dir))
    responder = Responder(s, cache.client(s), registry, band_plan)
    server = make_server(s, responder, registry, token)
    log.info("responder on 127.0.0.1:%d (dry run: %s)", s.responder_port, s.responder_dry_run)
    server.serve_forever()


if __name__ == "__main__":  # pragma: no cover
    main()
