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

Actions today: ``page`` (an alert of severity ``page``: a human is called; here the log line,
the counter and the entry are the call). Not yet: the replica-floor lease on traffic above the
forecast band, and re-warming first pages when the edge's hit ratio collapses (issue 23).
"""

from __future__ import annotations

import hmac
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import redis
from prometheus_client import CollectorRegistry, Counter, generate_latest

from core import cache
from core.settings import Settings

log = logging.getLogger("feedcast.responder")
MAX_BODY = 1_000_000  # Alertmanager's batches are small; anything larger is refused (413)
KEEP = 100  # entries of the action log kept in Redis


@dataclass(frozen=True)
class Action:
    action: str  # page
    alert: str  # the alert's name
    fingerprint: str  # Alertmanager's, with the alert's start: one incident
    severity: str
    summary: str


def plan(payload: dict[str, Any]) -> list[Action]:
    """The actions an Alertmanager webhook payload calls for (firing alerts only)."""
    out = []
    for alert in payload.get("alerts") or []:
        if not isinstance(alert, dict) or alert.get("status") != "firing":
            continue
        labels = alert.get("labels") or {}
        if labels.get("severity") == "page":
            out.append(
                Action(
                    action="page",
                    alert=str(labels.get("alertname", "unnamed")),
                    fingerprint=f"{alert.get('fingerprint', '')}@{alert.get('startsAt', '')}",
                    severity="page",
                    summary=str((alert.get("annotations") or {}).get("summary", "")),
                )
            )
    return out


def actions_key(s: Settings) -> str:
    return f"feedcast:{s.feast_project}:ops:actions"


class Responder:
    """Takes (or declines) the planned actions; Redis holds what was done."""

    def __init__(self, settings: Settings, client: redis.Redis, registry: CollectorRegistry):
        self.s, self.redis = settings, client
        self.counter = Counter(
            "feedcast_responder_actions",
            "Actions the alert responder decided, by action, alert and outcome (done, dry_run, "
            "already, rate_limited, off).",
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

    def handle(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        """Decide and record every action of ``payload``; what was decided."""
        decided = []
        for a in plan(payload):
            outcome = self._outcome(a)
            entry = {**asdict(a), "outcome": outcome, "at": round(time.time(), 3)}
            if outcome in ("done", "dry_run"):  # repeats are counted, not logged again
                pipe = self.redis.pipeline(transaction=False)
                pipe.lpush(actions_key(self.s), json.dumps(entry))
                pipe.ltrim(actions_key(self.s), 0, KEEP - 1)
                pipe.execute()
                log.warning("responder %s", json.dumps(entry))
            self.counter.labels(a.action, a.alert, outcome).inc()
            decided.append(entry)
        return decided


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
    responder = Responder(s, cache.client(s), registry)
    server = make_server(s, responder, registry, token)
    log.info("responder on 127.0.0.1:%d (dry run: %s)", s.responder_port, s.responder_dry_run)
    server.serve_forever()


if __name__ == "__main__":  # pragma: no cover
    main()
