"""Feed metrics for Prometheus, exported by Ray on every node, and JSON logs with a request id.

Why Ray's metrics and not ``prometheus_client``: replicas are Ray actors, many per node and on
many nodes. ``prometheus_client`` would need one HTTP port per replica (and something to find
them all) or a multiprocess directory that only works within one node. With
``ray.serve.metrics`` every replica records into its node's metrics agent, which serves all of
that node's series on the node's one metrics export port (``ray start --metrics-export-port``);
Prometheus scrapes each node there. Series carry the ``deployment``, ``replica`` and
``application`` tags in a replica, so replicas never overwrite each other, and ``sum by`` in
PromQL adds them up.

What Ray does to the names: a ``ray_`` prefix, and counters get ``_total``
(``feedcast_requests`` → ``ray_feedcast_requests_total``). Ray also adds labels ``Component``,
``NodeAddress``, ``SessionName`` and ``Version`` (Ray's version), which is why our tags are
``model_version`` and ``step`` rather than ``version`` and ``component``. A histogram's buckets
are exact, but the agent rebuilds ``_sum`` from bucket midpoints: use the buckets
(``histogram_quantile``), not ``_sum / _count``, for latency.

Without a Ray worker (plain Python, unit tests) recording is a harmless no-op.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from ray.serve.metrics import Counter, Gauge, Histogram

STAGES = ("candidates", "features", "light", "heavy", "rules", "total")
# Fixed for every replica: the node agent keeps one set of buckets per metric name.
LATENCY_BUCKETS_S = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]
SESSION_OUTCOMES = ("new", "continued", "retried", "expired", "lost", "unsaved")
WARM_OUTCOMES = ("submitted", "dropped", "warmed", "already", "refreshed", "absent", "failed")
CANDIDATE_BUCKETS = [1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 200.0, 400.0, 800.0]


class Metrics:
    """The feed's metrics. Build one per replica (in the deployment's ``__init__``).

    Every tag value must come from a small fixed set (stages, steps, sources, status codes,
    key ids, model versions): each distinct value is a series on every node.
    """

    def __init__(self) -> None:
        self._stage = Histogram(
            "feedcast_stage_seconds",
            description="Latency of one step of a feed request, in seconds.",
            boundaries=LATENCY_BUCKETS_S,
            tag_keys=("stage",),
        )
        self._degraded = Counter(
            "feedcast_degraded",
            description="Requests that took a step's degraded path.",
            tag_keys=("step",),
        )
        self._candidates = Histogram(
            "feedcast_candidates",
            description="Candidates one request got from a source.",
            boundaries=CANDIDATE_BUCKETS,
            tag_keys=("source",),
        )
        self._model = Gauge(
            "feedcast_model_version_info",
            description="1 for the model version a replica serves, 0 for the ones it served.",
            tag_keys=("model_version",),
        )
        self._status = Counter(
            "feedcast_requests",
            description="Feed API responses by HTTP status code.",
            tag_keys=("code",),
        )
        self._limited = Counter(
            "feedcast_rate_limited",
            description="Requests refused by the per-key rate limit.",
            tag_keys=("key_id",),
        )
        self._prefetch = Counter(
            "feedcast_prefetch_objects",
            description="Media objects the prefetch planned, by trigger (page, impression).",
            tag_keys=("trigger",),
        )
        self._warm = Counter(
            "feedcast_prefetch_warm",
            description="Edge warm requests by outcome: submitted, dropped (queue full), warmed "
            "(stored at the edge), already (the edge had it), refreshed / absent (a refresh "
            "found it cached / not), failed.",
            tag_keys=("outcome",),
        )
        self._sessions = Counter(
            "feedcast_sessions",
            description="Feed pages by session outcome: new (a first page stored its session), "
            "continued (a cursor's page), retried (a cursor asked again), expired / lost "
            "(a cursor whose session is gone: a fresh first page), unsaved (not stored: no "
            "cursor given).",
            tag_keys=("outcome",),
        )
        self._version: str | None = None

    def observe_stage(self, stage: str, seconds: float) -> None:
        """Record how long ``stage`` (one of :data:`STAGES`) took."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; one of {STAGES}")
        self._stage.observe(max(0.0, seconds), tags={"stage": stage})

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """``with metrics.timed("features"): ...`` records the block's duration (also on error)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.observe_stage(stage, time.perf_counter() - started)

    def degraded(self, step: str) -> None:
        """Count one request that fell back to ``step``'s degraded path."""
        self._degraded.inc(tags={"step": step})

    def candidates(self, source: str, n: int) -> None:
        """Record that one request got ``n`` candidates from ``source``."""
        self._candidates.observe(n, tags={"source": source})

    def model_version(self, label: str) -> None:
        """Say which model version this replica serves now (the previous one drops to 0)."""
        if label == self._version:
            return
        if self._version is not None:
            self._model.set(0, tags={"model_version": self._version})
        self._model.set(1, tags={"model_version": label})
        self._version = label

    def status(self, code: int) -> None:
        """Count one response with HTTP status ``code``."""
        if not 100 <= code <= 599:
            raise ValueError(f"not an HTTP status code: {code}")
        self._status.inc(tags={"code": str(code)})

    def prefetch_planned(self, trigger: str, n: int) -> None:
        """Count ``n`` objects planned for warming on a ``trigger`` (page or impression)."""
        if n:
            self._prefetch.inc(n, tags={"trigger": trigger})

    def prefetch_warm(self, outcome: str, n: int = 1) -> None:
        """Count ``n`` edge warm requests that ended in ``outcome`` (see WARM_OUTCOMES)."""
        if outcome not in WARM_OUTCOMES:
            raise ValueError(f"unknown warm outcome {outcome!r}; one of {WARM_OUTCOMES}")
        if n:
            self._warm.inc(n, tags={"outcome": outcome})

    def session(self, outcome: str) -> None:
        """Count one page by its session outcome (one of :data:`SESSION_OUTCOMES`)."""
        if outcome not in SESSION_OUTCOMES:
            raise ValueError(f"unknown session outcome {outcome!r}; one of {SESSION_OUTCOMES}")
        self._sessions.inc(tags={"outcome": outcome})

    def rate_limited(self, key_id: str) -> None:
        """Count one request refused by the rate limit for API key ``key_id``."""
        self._limited.inc(tags={"key_id": key_id})


def scrape_targets(nodes: list[dict[str, Any]]) -> list[str]:
    """``host:port`` of each live node's metrics endpoint, from ``ray.nodes()``.

    With ``--include-dashboard false`` Ray writes no Prometheus service discovery file; this
    list is what a ``file_sd_configs`` file needs (``[{"targets": scrape_targets(...)}]``).
    """
    return sorted(
        f"{n['NodeManagerAddress']}:{n['MetricsExportPort']}"
        for n in nodes
        if n.get("Alive") and n.get("MetricsExportPort", 0) > 0
    )


def _samples(targets: list[str], timeout_s: float) -> Iterator[Any]:
    """Every sample every node's metrics endpoint in ``targets`` serves, one scrape each."""
    for target in targets:
        text = httpx.get(f"http://{target}/metrics", timeout=timeout_s).text
        for family in text_string_to_metric_families(text):
            yield from family.samples


def prefetch_counters(targets: list[str], timeout_s: float = 5.0) -> dict[str, float]:
    """The prefetch counters summed over every replica of every node's endpoint in ``targets``
    (``scrape_targets``): ``planned:page``, ``warm:failed``, ``sessions:new`` ..."""
    names = {
        "ray_feedcast_prefetch_objects_total": ("planned", "trigger"),
        "ray_feedcast_prefetch_warm_total": ("warm", "outcome"),
        "ray_feedcast_sessions_total": ("sessions", "outcome"),
    }
    out: dict[str, float] = {}
    for sample in _samples(targets, timeout_s):
        if sample.name in names:
            short, tag = names[sample.name]
            key = f"{short}:{sample.labels.get(tag, '')}"
            out[key] = out.get(key, 0.0) + sample.value
    return out


def stage_buckets(targets: list[str], timeout_s: float = 5.0) -> dict[str, dict[float, float]]:
    """Each stage's latency histogram, summed over every replica at ``targets``: stage ->
    {upper bound in seconds (inf included): requests at or under it}, cumulative, as scraped.
    Two scrapes' difference is that window's histogram (:func:`bucket_quantile`)."""
    out: dict[str, dict[float, float]] = {}
    for sample in _samples(targets, timeout_s):
        if sample.name == "ray_feedcast_stage_seconds_bucket":
            stage, le = sample.labels.get("stage", ""), float(sample.labels["le"])
            per = out.setdefault(stage, {})
            per[le] = per.get(le, 0.0) + sample.value
    return out


def bucket_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """The ``q`` quantile (seconds) of what was recorded between two scrapes of one cumulative
    histogram, interpolated within its bucket as Prometheus' ``histogram_quantile`` does; NaN
    when nothing was recorded. A quantile in the last (+Inf) bucket is its lower bound."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return float("nan")
    rank = q * counts[-1]
    lower, below = 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if bound == float("inf"):
                return lower
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, count
    return lower


# --- logs ---------------------------------------------------------------------------------

REQUEST_ID: ContextVar[str | None] = ContextVar("feedcast_request_id", default=None)

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is logged.
_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


@contextmanager
def request_context(request_id: str) -> Iterator[None]:
    """Within the block, every log line carries ``request_id``."""
    token = REQUEST_ID.set(request_id)
    try:
        yield
    finally:
        REQUEST_ID.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, request_id, extras, exception.

    ``request_id`` is the record's own (``log.info(..., extra={"request_id": rid})``) or else
    the one set by :func:`request_context`; null outside a request.
    """

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or REQUEST_ID.get(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRS and key not in out and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str)


def json_logging(logger_name: str = "feedcast", level: int = logging.INFO) -> logging.Logger:
    """Send ``logger_name``'s records to stderr as JSON lines; idempotent per logger.

    The logger stops propagating, so a root handler (Ray's worker log, say) does not print each
    record a second time in plain text.
    """
    logger = logging.getLogger(logger_name)
    if not any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger
