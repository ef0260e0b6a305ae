"""Prometheus and Alertmanager from Debian, started by ``feedcast stack up`` beside the rest.

Both listen on 127.0.0.1 only (Alertmanager's clustering port is off), and so does the alert
responder (``pipelines/responder.py``), Alertmanager's webhook, with a bearer token made here.
Prometheus scrapes the Ray head's metrics port (every replica's series: serving/metrics.py),
itself, Alertmanager and the responder, evaluates ``monitoring/rules.yml`` and sends what fires
to Alertmanager. Their configuration is
written under the stack folder from the settings (scrape interval, retention, ports) each time
they start; ``promtool check config`` checks it in ``make test``.

On a cluster: point ``scrape_configs`` at every node's metrics port, e.g. a ``file_sd_configs``
file of ``serving.metrics.scrape_targets(ray.nodes())``.
"""

from __future__ import annotations

import math
import re
import secrets
import shutil
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml

from core.settings import REPO_ROOT, Settings, as_env
from stack import nginx, proc

PROMETHEUS, ALERTMANAGER, RESPONDER = "prometheus", "alertmanager", "responder"
REDIS_EXPORTER, MTAIL = "redis-exporter", "mtail"
RULES = REPO_ROOT / "monitoring" / "rules.yml"
RULES_TEST = REPO_ROOT / "monitoring" / "rules_test.yml"
MTAIL_PROGS = REPO_ROOT / "monitoring"  # nginx.mtail: the gate's and the edge's access logs


def _per_port(base: str, port: int, default: int) -> str:
    """Pid-file name: one process per port (the tests run their own beside the demo's)."""
    return base if port == default else f"{base}-{port}"


def prometheus_name(settings: Settings) -> str:
    return _per_port(PROMETHEUS, settings.prometheus_port, 9190)


def alertmanager_name(settings: Settings) -> str:
    return _per_port(ALERTMANAGER, settings.alertmanager_port, 9193)


def responder_name(settings: Settings) -> str:
    return _per_port(RESPONDER, settings.responder_port, 9194)


def redis_exporter_name(settings: Settings) -> str:
    return _per_port(REDIS_EXPORTER, settings.redis_exporter_port, 9195)


def mtail_name(settings: Settings) -> str:
    return _per_port(MTAIL, settings.mtail_port, 9196)


def responder_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.responder_port}"


def token_file(settings: Settings) -> Path:
    """The responder's bearer token, which Alertmanager sends (made once, mode 0600)."""
    path = settings.stack_dir / "monitoring" / f"{responder_name(settings)}.token"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(24))
    return path


def prometheus_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.prometheus_port}"


def alertmanager_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.alertmanager_port}"


def prometheus_binary() -> str:
    return proc.apt_install(lambda: shutil.which("prometheus"), "prometheus", "Prometheus")


def promtool() -> str:
    """Debian's ``promtool`` (in the ``prometheus`` package): config checks and rule tests."""
    return proc.apt_install(lambda: shutil.which("promtool"), "prometheus", "promtool")


def alertmanager_binary() -> str:
    def find() -> str | None:
        return shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")

    return proc.apt_install(find, "prometheus-alertmanager", "Alertmanager")


def redis_exporter_binary() -> str:
    return proc.apt_install(
        lambda: shutil.which("prometheus-redis-exporter"),
        "prometheus-redis-exporter",
        "the Redis exporter",
    )


def mtail_binary() -> str:
    return proc.apt_install(lambda: shutil.which("mtail"), "mtail", "mtail")


def _duration(seconds: float) -> str:
    return f"{int(seconds * 1000)}ms"


def prometheus_config(settings: Settings) -> dict[str, Any]:
    """``prometheus.yml`` for these settings."""
    every = _duration(settings.monitoring_scrape_s)

    def job(name: str, port: int) -> dict[str, Any]:
        return {"job_name": name, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}

    return {
        "global": {
            "scrape_interval": every,
            "evaluation_interval": every,
            "scrape_timeout": _duration(min(settings.monitoring_scrape_s, 10.0)),
        },
        "rule_files": [str(rules_file(settings))],
        "alerting": {
            "alertmanagers": [
                {"static_configs": [{"targets": [f"127.0.0.1:{settings.alertmanager_port}"]}]}
            ]
        },
        "scrape_configs": [
            job("ray", settings.ray_metrics_port),  # every replica's feedcast_* series
            job("prometheus", settings.prometheus_port),
            job("alertmanager", settings.alertmanager_port),
            job("responder", settings.responder_port),  # feedcast_responder_actions_total
            job("redis", settings.redis_exporter_port),  # redis_up, memory, clients, commands
            job("nginx", settings.mtail_port),  # the gate's and the edge's access logs
            job("cassandra", settings.cassandra_metrics_port),  # the JMX agent in the node
        ],
    }


def alertmanager_config(settings: Settings) -> dict[str, Any]:
    """``alertmanager.yml``: every alert grouped by name and sent to the responder's webhook
    (``pipelines/responder.py``) with its bearer token."""
    webhook = {
        "url": f"{responder_url(settings)}/alerts",
        "send_resolved": True,
        "max_alerts": 50,
        "http_config": {
            "authorization": {"type": "Bearer", "credentials_file": str(token_file(settings))}
        },
    }
    return {
        "route": {
            "receiver": "feedcast",
            "group_by": ["alertname"],
            "group_wait": "5s",
            "group_interval": "30s",
            "repeat_interval": "4h",
            # A firing band alert is re-sent every 5 minutes: the responder renews its lease.
            "routes": [
                {
                    "receiver": "feedcast",
                    "matchers": ['response="raise_floor"'],
                    "repeat_interval": "5m",
                }
            ],
        },
        "receivers": [{"name": "feedcast", "webhook_configs": [webhook]}],
    }


def rules_file(settings: Settings) -> Path:
    """The rules Prometheus loads: the repo's, or with ``monitoring_for_scale`` below 1 a copy
    under the stack folder with every ``for`` shortened (written by :func:`write_configs`)."""
    if settings.monitoring_for_scale == 1.0:
        return RULES
    return settings.stack_dir / "monitoring" / f"rules-{settings.prometheus_port}.yml"


def scaled_rules(text: str, scale: float) -> dict[str, Any]:
    """The rules of ``text`` with every alert's ``for`` times ``scale`` (at least 1 s)."""
    rules = yaml.safe_load(text)
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = _duration(max(1.0, _seconds(rule["for"]) * scale))
    return dict(rules)


def _seconds(duration: str) -> float:
    """A Prometheus duration such as ``1h30m`` or ``90s``, in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"([0-9]+)(ms|s|m|h|d|w|y)", duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"not a Prometheus duration: {duration!r}")
    return float(sum(int(n) * units[u] for n, u in parts))


def write_configs(settings: Settings) -> tuple[Path, Path]:
    """Both configuration files under the stack folder (and the scaled rules, where the
    settings scale them); their paths."""
    home = settings.stack_dir / "monitoring"
    home.mkdir(parents=True, exist_ok=True)
    if rules_file(settings) != RULES:
        scaled = scaled_rules(RULES.read_text(), settings.monitoring_for_scale)
        rules_file(settings).write_text(yaml.safe_dump(scaled, sort_keys=False))
    prom, am = home / "prometheus.yml", home / "alertmanager.yml"
    prom.write_text(yaml.safe_dump(prometheus_config(settings), sort_keys=False))
    am.write_text(yaml.safe_dump(alertmanager_config(settings), sort_keys=False))
    return prom, am


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def responder_answers(settings: Settings) -> bool:
    try:
        r = httpx.get(f"{responder_url(settings)}/health", timeout=2.0)
    except httpx.HTTPError:
        return False
    return r.status_code == 200 and "feedcast-responder" in r.text


def responder_env(settings: Settings) -> dict[str, str]:
    """The responder's environment: the stack's settings as ``FEEDCAST_*`` variables (it reads
    Redis, Prometheus, the plan, the pipeline's runs, and for a re-warm Cassandra, the feed and
    the edge). It inherits the rest of the stack's environment (FEEDCAST_API_KEY, the key a
    re-warm sends, among it)."""
    return as_env(settings, every=True)


def _metrics(port: int, needle: str) -> bool:
    """Whether ``GET /metrics`` on ``port`` answers with a series named ``needle``."""
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2.0)
    except httpx.HTTPError:
        return False
    return r.status_code == 200 and needle in r.text


def redis_exporter_answers(settings: Settings) -> bool:
    return _metrics(settings.redis_exporter_port, "redis_exporter_build_info")


def mtail_answers(settings: Settings) -> bool:
    return _metrics(settings.mtail_port, "mtail_build_info")


def answers(settings: Settings) -> bool:
    return (
        _ready(prometheus_url(settings))
        and _ready(alertmanager_url(settings))
        and responder_answers(settings)
        and redis_exporter_answers(settings)
        and mtail_answers(settings)
    )


def _exporters(settings: Settings) -> list[str]:
    """Start the Redis exporter and mtail where they are not answering; what was started."""
    started = []
    if not redis_exporter_answers(settings):
        addr = f"redis://{settings.redis_host}:{settings.redis_port}"
        pid = proc.launch(
            settings.stack_dir,
            redis_exporter_name(settings),
            [
                redis_exporter_binary(),
                f"--redis.addr={addr}",
                f"--web.listen-address=127.0.0.1:{settings.redis_exporter_port}",
                "--connection-timeout=2s",
            ],
            answers=lambda: redis_exporter_answers(settings),
            what="the Redis exporter",
        )
        started.append(f"redis exporter pid {pid}")
    if not mtail_answers(settings):
        logs = nginx.home(settings)
        logs.mkdir(parents=True, exist_ok=True)
        for name in ("gate.log", "access.log"):  # mtail polls the files there at its start
            (logs / name).touch()
        pid = proc.launch(
            settings.stack_dir,
            mtail_name(settings),
            [
                mtail_binary(),
                f"--progs={MTAIL_PROGS}",
                f"--logs={logs / 'gate.log'}",
                f"--logs={logs / 'access.log'}",
                "--address=127.0.0.1",
                f"--port={settings.mtail_port}",
                "--emit_prog_label=false",
            ],
            answers=lambda: mtail_answers(settings),
            what="mtail",
        )
        started.append(f"mtail pid {pid}")
    return started


def up(settings: Settings) -> str:
    """Start whichever of the responder, Alertmanager and Prometheus is not answering."""
    name, am_name = prometheus_name(settings), alertmanager_name(settings)
    if answers(settings):
        return "already running"
    prom_cfg, am_cfg = write_configs(settings)
    home = prom_cfg.parent
    started = _exporters(settings)
    responder_running = proc.read_pid(settings.stack_dir, responder_name(settings)) is not None
    if not responder_running and not responder_answers(settings):
        r_pid = proc.launch(
            settings.stack_dir,
            responder_name(settings),
            [sys.executable, "-m", "pipelines.responder", str(token_file(settings))],
            answers=lambda: responder_answers(settings),
            what="alert responder",
            env=responder_env(settings),
            cwd=REPO_ROOT,
        )
        started.append(f"responder pid {r_pid}")
    if proc.read_pid(settings.stack_dir, am_name) is None and not _ready(
        alertmanager_url(settings)
    ):
        am_pid = proc.launch(
            settings.stack_dir,
            am_name,
            [
                alertmanager_binary(),
                f"--config.file={am_cfg}",
                f"--storage.path={home / (am_name + '-data')}",
                f"--web.listen-address=127.0.0.1:{settings.alertmanager_port}",
                "--cluster.listen-address=",  # no gossip port: one Alertmanager, loopback only
            ],
            answers=lambda: _ready(alertmanager_url(settings)),
            what="Alertmanager",
        )
        started.append(f"alertmanager pid {am_pid}")
    if not _ready(prometheus_url(settings)):
        pid = proc.launch(
            settings.stack_dir,
            name,
            [
                prometheus_binary(),
                f"--config.file={prom_cfg}",
                f"--storage.tsdb.path={home / (name + '-data')}",  # one per port
                f"--storage.tsdb.retention.time={settings.monitoring_retention}",
                f"--web.listen-address=127.0.0.1:{settings.prometheus_port}",
                "--web.enable-lifecycle",  # POST /-/reload after a config change
            ],
            answers=lambda: _ready(prometheus_url(settings)),
            what="Prometheus",
            timeout_s=60,
        )
        started.append(f"prometheus pid {pid}")
    if not started:
        return f"reusing the Prometheus at {prometheus_url(settings)}"
    return f"started ({', '.join(started)}) at {prometheus_url(settings)}"


def down(settings: Settings) -> bool:
    stopped = proc.stop(settings.stack_dir, prometheus_name(settings))
    stopped = proc.stop(settings.stack_dir, mtail_name(settings)) or stopped
    stopped = proc.stop(settings.stack_dir, redis_exporter_name(settings)) or stopped
    stopped = proc.stop(settings.stack_dir, alertmanager_name(settings)) or stopped
    return proc.stop(settings.stack_dir, responder_name(settings), grace_s=5) or stopped


# -- reading it back ------------------------------------------------------------------------------


def query(settings: Settings, promql: str, timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """An instant PromQL query against the stack's Prometheus: its result vector."""
    r = httpx.get(
        f"{prometheus_url(settings)}/api/v1/query", params={"query": promql}, timeout=timeout_s
    )
    return _result(r, promql)


def _result(r: httpx.Response, promql: str) -> list[dict[str, Any]]:
    r.raise_for_status()
    body = r.json()
    if body.get("status") != "success":
        raise RuntimeError(f"Prometheus refused {promql!r}: {body.get('error')}")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def query_range(
    settings: Settings,
    promql: str,
    start: float,
    end: float,
    step_s: float,
    timeout_s: float = 30.0,
) -> list[dict[str, Any]]:
    """A range query (epoch seconds): each series' labels and ``values`` ([t, "v"] pairs)."""
    r = httpx.get(
        f"{prometheus_url(settings)}/api/v1/query_range",
        params={"query": promql, "start": start, "end": end, "step": f"{step_s:g}s"},
        timeout=timeout_s,
    )
    return _result(r, promql)


def scalar(settings: Settings, promql: str) -> float | None:
    """The one value of ``promql`` (None when it has no series or is NaN, e.g. no traffic)."""
    rows = query(settings, promql)
    value = float(rows[0]["value"][1]) if rows else math.nan
    return None if math.isnan(value) else value  # NaN: a ratio of no traffic to none


def alerts(settings: Settings, timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """What Alertmanager holds now (firing, silenced or inhibited), oldest first."""
    r = httpx.get(f"{alertmanager_url(settings)}/api/v2/alerts", timeout=timeout_s)
    r.raise_for_status()
    found: list[dict[str, Any]] = r.json()
    return sorted(found, key=lambda a: a.get("startsAt", ""))


def targets(settings: Settings, timeout_s: float = 5.0) -> dict[str, bool]:
    """Each scrape target Prometheus has now (``job instance``): whether its last scrape
    answered. (Not the ``up`` series: after a restart it still holds the old targets' points.)"""
    r = httpx.get(f"{prometheus_url(settings)}/api/v1/targets", timeout=timeout_s)
    r.raise_for_status()
    return {
        f"{t['labels'].get('job')} {t['labels'].get('instance')}": t.get("health") == "up"
        for t in r.json()["data"]["activeTargets"]
    }
