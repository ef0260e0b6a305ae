"""The monitoring configuration: Prometheus' and Alertmanager's files check out with Debian's
own tools, and every alert rule is tested with ``promtool test rules`` (firing where its
``fires_within`` says, silent before)."""

import re
import subprocess
from pathlib import Path

import yaml

from core.settings import Settings
from stack import monitoring

RULES = yaml.safe_load(monitoring.RULES.read_text())
CASES = yaml.safe_load(monitoring.RULES_TEST.read_text())["tests"]
ALERTS = {r["alert"]: r for g in RULES["groups"] for r in g["rules"] if "alert" in r}


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def test_promtool_passes_every_rule_test():
    done = _run(monitoring.promtool(), "test", "rules", str(monitoring.RULES_TEST))
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_is_tested_firing_and_silent():
    fired = {t["alertname"] for c in CASES for t in c["alert_rule_test"] if t["exp_alerts"]}
    silent = {t["alertname"] for c in CASES for t in c["alert_rule_test"] if not t["exp_alerts"]}
    assert set(ALERTS) <= fired, set(ALERTS) - fired
    assert set(ALERTS) - {"UploadsRefused"} <= silent, set(ALERTS) - silent


def test_every_alert_says_how_soon_it_fires_and_how_bad_it_is():
    for name, rule in ALERTS.items():
        assert rule["annotations"]["fires_within"], name
        assert rule["labels"]["severity"] in ("page", "ticket"), name


def test_the_generated_prometheus_config_checks_out(tmp_path: Path):
    s = Settings(stack_dir=tmp_path, prometheus_port=9290, monitoring_scrape_s=2.5)
    prom, am = monitoring.write_configs(s)
    done = _run(monitoring.promtool(), "check", "config", str(prom))
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"SUCCESS: \d+ rules found", done.stdout), done.stdout
    config = yaml.safe_load(prom.read_text())
    assert config["global"]["scrape_interval"] == "2500ms"
    targets = [
        t for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]
    ]
    assert f"127.0.0.1:{s.ray_metrics_port}" in targets and "127.0.0.1:9290" in targets
    assert all(t.startswith("127.0.0.1:") for t in targets)
    amtool = Path(monitoring.alertmanager_binary()).with_name("amtool")  # Debian ships both
    done = _run(str(amtool), "check-config", str(am))
    assert done.returncode == 0, done.stdout + done.stderr


def test_ops_status_says_when_monitoring_is_not_there(monkeypatch):
    from typer.testing import CliRunner

    from pipelines.cli import app

    monkeypatch.setenv("FEEDCAST_PROMETHEUS_PORT", "9")  # nothing listens on the discard port
    r = CliRunner().invoke(app, ["ops", "status"])
    assert r.exit_code != 0
    assert "monitoring unreachable" in r.output and "feedcast stack up" in r.output
