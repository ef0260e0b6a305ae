"""Prometheus and Alertmanager from Debian, started by ``feedcast stack up`` beside the rest.

Both listen on 127.0.0.1 only (Alertmanager's clustering port is off). Prometheus scrapes the
Ray head's metrics port (every replica's series: serving/metrics.py), itself and Alertmanager,
evaluates ``monitoring/rules.yml`` and sends what fires to Alertmanager. Their configuration is
written under the stack folder from the settings (scrape interval, retention, ports) each time
they start; ``promtool check config`` checks it in ``make test``.

On a cluster: point ``scrape_configs`` at every node's metrics port, e.g. a ``file_sd_configs``
file of ``serving.metrics.scrape_targets(ray.nodes())``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
import yaml

from core.settings import REPO_ROOT, Settings
from stack import proc

PROMETHEUS, ALERTMANAGER = "prometheus", "alertmanager"
RULES = REPO_ROOT / "monitoring" / "rules.yml"
RULES_TEST = REPO_ROOT / "monitoring" / "rules_test.yml"


def prometheus_name(settings: Settings) -> str:
    """Pid-file name: one Prometheus per port (the tests run their own beside the demo's)."""
    return (
        PROMETHEUS
        if settings.prometheus_port == 9190
        else f"{PROMETHEUS}-{settings.prometheus_port}"
    )


def alertmanager_name(settings: Settings) -> str:
    port = settings.alertmanager_port
    return ALERTMANAGER if port == 9193 else f"{ALERTMANAGER}-{port}"


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
        "rule_files": [str(RULES)],
        "alerting": {
            "alertmanagers": [
                {"static_configs": [{"targets": [f"127.0.0.1:{settings.alertmanager_port}"]}]}
            ]
        },
        "scrape_configs": [
            job("ray", settings.ray_metrics_port),  # every replica's feedcast_* series
            job("prometheus", settings.prometheus_port),
            job("alertmanager", settings.alertmanager_port),
        ],
    }


def alertmanager_config(settings: Settings) -> dict[str, Any]:
    """``alertmanager.yml``: every alert grouped by name, kept in Alertmanager (its API and
    ``feedcast ops status`` show them); no receiver acts on them yet."""
    return {
        "route": {
            "receiver": "feedcast",
            "group_by": ["alertname"],
            "group_wait": "10s",
            "group_interval": "1m",
            "repeat_interval": "4h",
        },
        "receivers": [{"name": "feedcast"}],
    }


def write_configs(settings: Settings) -> tuple[Path, Path]:
    """Both configuration files under the stack folder; their paths."""
    home = settings.stack_dir / "monitoring"
    home.mkdir(parents=True, exist_ok=True)
    prom, am = home / "prometheus.yml", home / "alertmanager.yml"
    prom.write_text(yaml.safe_dump(prometheus_config(settings), sort_keys=False))
    am.write_text(yaml.safe_dump(alertmanager_config(settings), sort_keys=False))
    return prom, am


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def answers(settings: Settings) -> bool:
    return _ready(prometheus_url(settings)) and _ready(alertmanager_url(settings))


def up(settings: Settings) -> str:
    name, am_name = prometheus_name(settings), alertmanager_name(settings)
    if proc.read_pid(settings.stack_dir, name) is not None:
        return "already running"
    prom_cfg, am_cfg = write_configs(settings)
    home = prom_cfg.parent
    started = []
    if proc.read_pid(settings.stack_dir, am_name) is None and not _ready(
        alertmanager_url(settings)
    ):
        am_pid = proc.launch(
            settings.stack_dir,
            am_name,
            [
                alertmanager_binary(),
                f"--config.file={am_cfg}",
                f"--storage.path={home / 'alertmanager-data'}",
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
                f"--storage.tsdb.path={home / 'prometheus-data'}",
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
    return proc.stop(settings.stack_dir, alertmanager_name(settings)) or stopped


# -- reading it back ------------------------------------------------------------------------------


def query(settings: Settings, promql: str, timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """An instant PromQL query against the stack's Prometheus: its result vector."""
    r = httpx.get(
        f"{prometheus_url(settings)}/api/v1/query", params={"query": promql}, timeout=timeout_s
    )
    r.raise_for_status()
    body = r.json()
    if body.get("status") != "success":
        raise RuntimeError(f"Prometheus refused {promql!r}: {body.get('error')}")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def scalar(settings: Settings, promql: str) -> float | None:
    """The one value of ``promql`` (None when it has no series, e.g. no traffic yet)."""
    rows = query(settings, promql)
    return float(rows[0]["value"][1]) if rows else None


def alerts(settings: Settings, timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """What Alertmanager holds now (firing, silenced or inhibited), oldest first."""
    r = httpx.get(f"{alertmanager_url(settings)}/api/v2/alerts", timeout=timeout_s)
    r.raise_for_status()
    found: list[dict[str, Any]] = r.json()
    return sorted(found, key=lambda a: a.get("startsAt", ""))


def targets(settings: Settings) -> dict[str, bool]:
    """Each scrape job: whether its last scrape answered."""
    return {
        f"{row['metric'].get('job')} {row['metric'].get('instance')}": row["value"][1] == "1"
        for row in query(settings, "up")
    }
