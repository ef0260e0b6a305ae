"""The stack's Prometheus scrapes the live feed (Ray's metrics port), loads the versioned alert
rules without an error, hands alerts to Alertmanager, and ``feedcast ops status`` reads it."""

import json

import httpx
from typer.testing import CliRunner

from core.settings import DEV_API_KEY
from stack import monitoring
from tests.integration.suite import readers
from tests.waiting import wait_until

API = {"X-API-Key": DEV_API_KEY}


def test_prometheus_scrapes_the_feed_and_evaluates_every_rule(service, settings, world):
    for user in readers(world, settings, 5):
        r = httpx.get(f"{service}/v1/feed/{user}", headers=API, timeout=30)
        assert r.status_code == 200, r.text
    wait_until(
        lambda: (monitoring.scalar(settings, "sum(ray_feedcast_requests_total)") or 0) >= 5,
        timeout=90,
        what="the feed's answers counted in Prometheus",
    )
    ups = monitoring.targets(settings)
    assert ups == {
        f"ray 127.0.0.1:{settings.ray_metrics_port}": True,
        f"prometheus 127.0.0.1:{settings.prometheus_port}": True,
        f"alertmanager 127.0.0.1:{settings.alertmanager_port}": True,
    }
    # Every rule loaded and evaluated against the live series without an error.
    url = monitoring.prometheus_url(settings)
    groups = httpx.get(f"{url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    assert {g["name"] for g in groups} == {
        "feedcast-slo",
        "feedcast-dependencies",
        "feedcast-media",
    }
    wait_until(
        lambda: all(
            r.get("lastEvaluation", "").startswith("20")
            for g in httpx.get(f"{url}/api/v1/rules", timeout=10).json()["data"]["groups"]
            for r in g["rules"]
        ),
        timeout=30,
        what="every rule evaluated",
    )
    rules = [r for g in httpx.get(f"{url}/api/v1/rules", timeout=10).json()["data"]["groups"]
             for r in g["rules"]]  # fmt: skip
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
    # Prometheus knows its Alertmanager.
    ams = httpx.get(f"{url}/api/v1/alertmanagers", timeout=10).json()["data"]["activeAlertmanagers"]
    assert [a["url"] for a in ams] == [
        f"http://127.0.0.1:{settings.alertmanager_port}/api/v2/alerts"
    ]


def test_ops_status_reads_the_live_figures(service, settings, world, monkeypatch):
    from pipelines.cli import app

    for user in readers(world, settings, 3, skip=5):
        httpx.get(f"{service}/v1/feed/{user}", headers=API, timeout=30).raise_for_status()
    wait_until(
        lambda: (
            (monitoring.scalar(settings, "sum(rate(ray_feedcast_requests_total[5m]))") or 0) > 0
        ),
        timeout=90,
        what="a request rate in Prometheus",
    )
    for key in ("PROMETHEUS_PORT", "ALERTMANAGER_PORT", "RAY_METRICS_PORT"):
        monkeypatch.setenv(f"FEEDCAST_{key}", str(getattr(settings, key.lower())))
    r = CliRunner().invoke(app, ["ops", "status", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["figures"]["requests_per_s"] > 0
    assert out["figures"]["errors_5m"] is not None and out["figures"]["errors_5m"] < 0.5
    assert all(out["targets"].values()), out["targets"]
    assert isinstance(out["alerts"], list)
    human = CliRunner().invoke(app, ["ops", "status"])
    assert human.exit_code == 0 and "SLOs" in human.output and "Targets" in human.output
