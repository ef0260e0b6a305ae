"""The monitoring configuration: Prometheus' and Alertmanager's files check out with Debian's
own tools, and every alert rule is tested with ``promtool test rules`` (firing where its
``fires_within`` says, silent before)."""

import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from core.settings import Settings
from pipelines import responder
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
    assert set(ALERTS) <= silent, set(ALERTS) - silent


def test_every_alert_says_how_soon_it_fires_and_how_bad_it_is():
    for name, rule in ALERTS.items():
        assert rule["annotations"]["fires_within"], name
        assert rule["labels"]["severity"] in ("page", "ticket"), name
        assert rule["labels"].get("response", "raise_floor") in responder.RESPONSES, name


def test_scaled_rules_shorten_every_for_and_nothing_else():
    scaled = monitoring.scaled_rules(monitoring.RULES.read_text(), 0.1)
    pairs = zip(RULES["groups"], scaled["groups"], strict=True)
    for before, after in (
        (b, a) for g, h in pairs for b, a in zip(g["rules"], h["rules"], strict=True)
    ):
        if "for" in before:
            want = max(1.0, monitoring._seconds(before["for"]) * 0.1)
            assert abs(int(after["for"].removesuffix("ms")) / 1000 - want) < 1e-6, before
        assert {k: v for k, v in after.items() if k != "for"} == {
            k: v for k, v in before.items() if k != "for"
        }
    assert monitoring._seconds("1h30m") == 5400 and monitoring._seconds("250ms") == 0.25
    for bad in ("", "5", "1x", "m5"):
        with pytest.raises(ValueError, match="not a Prometheus duration"):
            monitoring._seconds(bad)
    s = Settings(monitoring_for_scale=0.1, prometheus_port=9999)
    assert monitoring.rules_file(s).name == "rules-9999.yml"
    assert monitoring.rules_file(Settings()) == monitoring.RULES


def test_the_responder_plans_the_response_its_label_names_and_pages_for_page_severity():
    def alert(status: str, **labels: str) -> dict:
        return {"status": status, "labels": labels, "fingerprint": "f", "startsAt": "t"}

    payload = {"alerts": [
        alert("firing", alertname="AboveBand", severity="ticket", response="raise_floor"),
        alert("firing", alertname="Both", severity="page", response="raise_floor"),
        alert("firing", alertname="Unknown", severity="ticket", response="reboot_everything"),
        alert("resolved", alertname="Over", severity="page"),
        "not an alert",
    ]}  # fmt: skip
    planned = [(a.action, a.alert) for a in responder.plan(payload)]
    assert planned == [
        ("raise_floor", "AboveBand"), ("raise_floor", "Both"), ("page", "Both")
    ]  # fmt: skip
    assert responder.plan({}) == [] and responder.plan({"alerts": None}) == []


def test_the_band_plan_is_exported_now_and_sizes_the_floor(tmp_path: Path):
    import os
    import time
    from datetime import UTC, datetime

    from prometheus_client import CollectorRegistry, generate_latest

    path = tmp_path / "plan.yaml"
    band = responder.BandPlan(path)
    registry = CollectorRegistry()
    registry.register(responder.BandCollector(band))
    assert "feedcast_forecast_band_active 0.0" in generate_latest(registry).decode()  # no file
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0).timestamp()
    rows = [
        {"hour": datetime.fromtimestamp(hour + 3600 * i, UTC).isoformat(),
         "requests_low_rps": 1.0, "requests_median_rps": 2.0, "requests_high_rps": 3.0}
        for i in (-1, 0, 1)
    ]  # fmt: skip
    path.write_text(yaml.safe_dump({"config": {"replica_rps": 4.0}, "forecast_band": rows,
                                    "feed_autoscaling": [{"max_replicas": 5}]}))  # fmt: skip
    text = generate_latest(registry).decode()
    assert "feedcast_forecast_band_active 1.0" in text
    assert 'feedcast_forecast_band_rps{bound="high",series="requests"} 3.0' in text
    s = Settings(serve_max_replicas=2)
    r = responder.Responder(s, None, CollectorRegistry(), band)  # type: ignore[arg-type]
    assert r.floor_for(9.0)[0] == 3  # 9 req/s at 4 a replica
    assert r.floor_for(100.0)[0] == 5  # the plan's ceiling, not the settings'
    assert r.floor_for(0.0)[0] == 1
    assert r.floor_for(None) == (5, "the ceiling: live rate unknown")
    path.write_text("not: [a, plan")  # garbled: no band, the settings' ceiling
    os.utime(path, (time.time() + 5, time.time() + 5))
    assert "feedcast_forecast_band_active 0.0" in generate_latest(registry).decode()
    assert r.floor_for(None)[0] == 2


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


def test_the_ops_plot_draws_rates_band_alert_spans_and_actions(tmp_path: Path):
    import numpy as np
    from PIL import Image

    from pipelines import ops_plot

    t = np.arange(0.0, 3600.0, 60.0) + 1.8e9
    firing = np.r_[t[10:20], t[40:45]]
    assert ops_plot._spans(firing, 60.0) == [(t[10], t[19] + 60), (t[40], t[44] + 60)]
    assert ops_plot._spans(np.zeros(0), 60.0) == []
    live = (t, 5 + np.sin(t / 600.0))
    band = {"live": live, "low": (t, np.full(len(t), 3.0)), "high": (t, np.full(len(t), 7.0)),
            "median": (t, np.full(len(t), 5.0))}  # fmt: skip
    empty = {k: (np.zeros(0), np.zeros(0)) for k in band}
    data = {
        "start": t[0], "end": t[-1],
        "panels": {"requests": band, "uploads": empty},
        "alerts": {"FeedTrafficAboveBand": ops_plot._spans(firing, 60.0)},
        "actions": [{"at": t[12], "action": "raise_floor", "alert": "FeedTrafficAboveBand"}],
    }  # fmt: skip
    out = ops_plot.plot(data, tmp_path / "ops.png")
    with Image.open(out) as img:
        assert img.size == (1200, 800)
        # the band (blue), the alert's span (red) and the action (green) are drawn
        colors = img.convert("RGB").getcolors(1_000_000)
    assert colors is not None

    def near(rgb: tuple[int, int, int]) -> int:
        return sum(
            n for n, c in colors if sum(abs(a - b) for a, b in zip(c, rgb, strict=True)) < 60
        )

    assert near((214, 39, 40)) > 500  # tab:red
    assert near((44, 160, 44)) > 100  # tab:green


def test_mtail_counts_the_gates_codes_sheds_and_the_edges_cache_status(tmp_path: Path):
    """monitoring/nginx.mtail over lines in the `edge` log format of stack/conf/nginx.conf, by
    Debian's mtail itself (one-shot)."""
    fmt = '127.0.0.1 [06/Dec/2026:23:00:00 +0000] "{} HTTP/1.1" {} {} cache={} rt=0.010 urt={}'
    gate = [
        ("GET /v1/feed/12?limit=3", 200, 512, "-", "0.011"),
        ("GET /v1/feed/12", 503, 90, "-", "-"),  # the gate's own 503: shed
        ("GET /v1/feed/13", 503, 90, "-", "0.099"),  # the service's 503: not shed
        ("POST /v1/uploads", 503, 120, "-", "-"),
        ("POST /v1/uploads", 202, 120, "-", "0.290"),
        ("GET /healthz", 200, 20, "-", "0.001"),
    ]
    edge = [("GET /m/a.jpg", 200, 1000, "HIT", "-"), ("GET /m/b.jpg", 200, 3000, "MISS", "0.01")]
    (tmp_path / "gate.log").write_text("".join(fmt.format(*x) + "\n" for x in gate))
    (tmp_path / "access.log").write_text("".join(fmt.format(*x) + "\n" for x in edge))
    done = _run(
        monitoring.mtail_binary(), "--one_shot", "--one_shot_format", "prometheus",
        "--emit_prog_label=false", f"--progs={monitoring.MTAIL_PROGS}",
        f"--logs={tmp_path / 'gate.log'}", f"--logs={tmp_path / 'access.log'}",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    got = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in done.stdout.splitlines()
        if line.startswith("feedcast_")
    }
    assert got == {
        'feedcast_gate_responses{code="200",route="feed"}': 1,
        'feedcast_gate_responses{code="503",route="feed"}': 2,
        'feedcast_gate_responses{code="503",route="uploads"}': 1,
        'feedcast_gate_responses{code="202",route="uploads"}': 1,
        'feedcast_gate_responses{code="200",route="other"}': 1,
        'feedcast_gate_shed{route="feed"}': 1,
        'feedcast_gate_shed{route="uploads"}': 1,
        'feedcast_edge_responses{cache="HIT",code="200"}': 1,
        'feedcast_edge_responses{cache="MISS",code="200"}': 1,
        'feedcast_edge_bytes{cache="HIT"}': 1000,
        'feedcast_edge_bytes{cache="MISS"}': 3000,
    }


def test_the_pipeline_series_come_from_the_run_folders(tmp_path: Path):
    import json

    from pipelines.pipeline_series import figures, read_runs

    def run(run_id: str, status: str, ended: str | None, gate: bool | None = None) -> None:
        state: dict = {"run_id": run_id, "status": status, "steps": {}}
        if ended:
            state["ended"] = ended
        if gate is not None:
            state["steps"]["gate"] = {"out": {"promote": gate, "reason": "", "checks": []}}
        (tmp_path / "runs" / run_id).mkdir(parents=True)
        (tmp_path / "runs" / run_id / "state.json").write_text(json.dumps(state))

    assert figures(read_runs(tmp_path)) == {"runs": {}, "last_ok": None, "last_promoted": None,
                                            "last_stopped": None, "gate_passed": None}  # fmt: skip
    run("20261201T030000Z-aaaa", "promoted", "2026-12-01T03:20:00+00:00", gate=True)
    run("20261202T030000Z-bbbb", "nothing-new", "2026-12-02T03:01:00+00:00")
    run("20261203T030000Z-cccc", "refused", "2026-12-03T03:25:00+00:00", gate=False)
    run("20261204T030000Z-dddd", "stopped", "2026-12-04T03:02:00+00:00")
    run("20261205T030000Z-eeee", "running", None)  # failed, waiting to be resumed
    (tmp_path / "runs" / "stray").mkdir()
    (tmp_path / "runs" / "stray" / "state.json").write_text("{half a")
    f = figures(read_runs(tmp_path))
    assert f["runs"] == {"promoted": 1, "nothing-new": 1, "refused": 1, "stopped": 1, "running": 1}
    assert f["last_ok"] == datetime(2026, 12, 2, 3, 1, tzinfo=UTC).timestamp()
    assert f["last_promoted"] == datetime(2026, 12, 1, 3, 20, tzinfo=UTC).timestamp()
    assert f["last_stopped"] == 1.0 and f["gate_passed"] == 0.0


def test_chaos_alert_timings_count_from_the_fault_and_the_recovery():
    from bench import chaos_alerts

    watch = chaos_alerts.Watch(Settings(), {"RedisDown": 45.0, "RedisUnreachable": 45.0})
    watch.fired = {"RedisDown": 140.0, "RedisUnreachable": 170.0}
    watch.resolved = {"RedisDown": 205.0}
    t = watch.timings(fault=100.0, recovered=160.0)
    assert t == {
        "RedisDown": {"fired_s": 40.0, "resolved_s": 45.0, "bound_s": 45.0},
        "RedisUnreachable": {"fired_s": 70.0, "resolved_s": None, "bound_s": 45.0},
    }
    assert chaos_alerts.checks(t) == {
        "RedisDown fires within 45 s": True,
        "RedisDown resolves after recovery": True,
        "RedisUnreachable fires within 45 s": False,
        "RedisUnreachable resolves after recovery": False,
    }
    toggling = chaos_alerts.Watch(Settings(), {"FeedReplicasDown": 45.0})
    for now, firing in (
        (10.0, set()),
        (20.0, {"FeedReplicasDown"}),
        (30.0, set()),
        (40.0, {"FeedReplicasDown", "Other"}),
        (50.0, set()),
        (60.0, set()),
    ):
        toggling.observe(now, firing)  # fmt: skip
    assert toggling.fired == {"FeedReplicasDown": 20.0}  # the first time it fired
    assert toggling.resolved == {"FeedReplicasDown": 50.0}  # the last time it stopped
    rules = {r["alert"] for g in RULES["groups"] for r in g["rules"] if "alert" in r}
    for expected in chaos_alerts.EXPECTED.values():
        assert set(expected) <= rules  # every alert the chaos suite waits for exists
