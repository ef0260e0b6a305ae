import io
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving.metrics import (
    STAGES,
    JsonFormatter,
    Metrics,
    json_logging,
    request_context,
    scrape_targets,
)


def test_every_stage_is_accepted_and_an_unknown_one_refused():
    m = Metrics()
    for stage in STAGES:
        m.observe_stage(stage, 0.01)
    with pytest.raises(ValueError, match="unknown stage"):
        m.observe_stage("ranking", 0.01)


def test_timed_records_the_block_even_when_it_raises(monkeypatch):
    m = Metrics()
    seen: list[tuple[str, float]] = []
    monkeypatch.setattr(m, "observe_stage", lambda stage, s: seen.append((stage, s)))
    with pytest.raises(RuntimeError), m.timed("features"):
        raise RuntimeError("store down")
    assert len(seen) == 1
    assert seen[0][0] == "features"
    assert 0 <= seen[0][1] < 1


def test_status_takes_http_codes_only():
    m = Metrics()
    m.status(200)
    m.status(429)
    for bad in (0, 42, 600):
        with pytest.raises(ValueError, match="status code"):
            m.status(bad)


def test_a_new_model_version_drops_the_previous_one_to_zero(monkeypatch):
    m = Metrics()
    sets: list[tuple[float, str]] = []
    monkeypatch.setattr(m._model, "set", lambda v, tags: sets.append((v, tags["model_version"])))
    m.model_version("v1")
    m.model_version("v1")
    m.model_version("v2")
    assert sets == [(1, "v1"), (0, "v1"), (1, "v2")]


def test_scrape_targets_list_live_nodes_that_export():
    nodes = [
        {"Alive": True, "NodeManagerAddress": "10.0.0.2", "MetricsExportPort": 8080},
        {"Alive": False, "NodeManagerAddress": "10.0.0.3", "MetricsExportPort": 8080},
        {"Alive": True, "NodeManagerAddress": "10.0.0.1", "MetricsExportPort": 8080},
        {"Alive": True, "NodeManagerAddress": "10.0.0.4", "MetricsExportPort": -1},
    ]
    assert scrape_targets(nodes) == ["10.0.0.1:8080", "10.0.0.2:8080"]


def _format(logger: logging.Logger, emit) -> dict:
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    try:
        emit()
    finally:
        logger.removeHandler(handler)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 1
    return json.loads(lines[0])


def test_json_log_lines_carry_the_request_id_of_the_context_and_extras():
    log = logging.getLogger("feedcast.test.json")
    log.setLevel(logging.INFO)
    with request_context("r-123"):
        out = _format(log, lambda: log.info("served %d items", 20, extra={"user_id": 7}))
    assert out["message"] == "served 20 items"
    assert out["request_id"] == "r-123"
    assert out["user_id"] == 7
    assert out["level"] == "INFO"
    assert out["logger"] == "feedcast.test.json"
    assert out["ts"].endswith("+00:00")
    outside = _format(log, lambda: log.info("idle"))
    assert outside["request_id"] is None


def test_json_log_lines_take_an_explicit_request_id_and_the_exception():
    log = logging.getLogger("feedcast.test.json")

    def boom():
        try:
            raise KeyError("post 9")
        except KeyError:
            log.exception("failed", extra={"request_id": "r-9"})

    with request_context("ignored"):
        out = _format(log, boom)
    assert out["request_id"] == "r-9"
    assert "KeyError: 'post 9'" in out["exc"]


def test_json_logging_adds_its_handler_once_and_stops_propagation():
    name = f"feedcast.test.setup.{secrets.token_hex(4)}"
    log = json_logging(name)
    json_logging(name)
    assert sum(isinstance(h.formatter, JsonFormatter) for h in log.handlers) == 1
    assert log.propagate is False


# Runs in a fresh interpreter so that Ray (its own temp dir, auth token and metrics port) never
# meets the Ray of another test in this session.
_EXPORT_PROBE = """
import json, sys, time, urllib.request
import ray
from serving.metrics import Metrics, scrape_targets

port, tmp = int(sys.argv[1]), sys.argv[2]
ray.init(num_cpus=1, include_dashboard=False, _metrics_export_port=port, _temp_dir=tmp,
         object_store_memory=80 * 1024 * 1024, log_to_driver=False)

@ray.remote(num_cpus=0)
class Replica:
    def __init__(self):
        self.m = Metrics()

    def work(self):
        self.m.observe_stage("features", 0.004)
        self.m.degraded("features")
        self.m.candidates("timeline", 40)
        self.m.model_version("v1")
        self.m.model_version("v2")
        self.m.status(200)
        self.m.rate_limited("abc")

ray.get(Replica.remote().work.remote())
targets = scrape_targets(ray.nodes())
names = ["feedcast_stage_seconds", "feedcast_degraded", "feedcast_candidates",
         "feedcast_model_version_info", "feedcast_requests", "feedcast_rate_limited"]
text, deadline = "", time.time() + 90
while time.time() < deadline and not all(f"ray_{n}" in text for n in names):
    time.sleep(1)
    text = urllib.request.urlopen(f"http://{targets[0]}/metrics", timeout=5).read().decode()
ray.shutdown()
print(json.dumps({"targets": targets, "text": text}))
"""


@pytest.mark.integration
def test_metrics_recorded_in_a_ray_actor_are_served_on_the_nodes_metrics_port(tmp_path: Path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    token = tmp_path / "token"
    token.write_text(secrets.token_hex(32))
    ray_tmp = tempfile.mkdtemp(prefix="rayfc-", dir="/tmp")  # short: Ray's sockets live here
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _EXPORT_PROBE, str(port), ray_tmp],
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [t.rsplit(":", 1)[1] for t in out["targets"]] == [str(port)]

    samples = {}
    for family in text_string_to_metric_families(out["text"]):
        for s in family.samples:
            if s.name.startswith("ray_feedcast_"):
                key = tuple(
                    sorted(
                        (k, v)
                        for k, v in s.labels.items()
                        if k.islower() and not k.startswith("otel_")
                    )
                )
                samples[(s.name, key)] = s.value
    assert samples[("ray_feedcast_stage_seconds_bucket", (("le", "0.005"), ("stage", "features")))]
    assert not samples[
        ("ray_feedcast_stage_seconds_bucket", (("le", "0.0025"), ("stage", "features")))
    ]
    assert samples[("ray_feedcast_degraded_total", (("step", "features"),))] == 1
    assert samples[("ray_feedcast_candidates_count", (("source", "timeline"),))] == 1
    assert samples[("ray_feedcast_model_version_info", (("model_version", "v1"),))] == 0
    assert samples[("ray_feedcast_model_version_info", (("model_version", "v2"),))] == 1
    assert samples[("ray_feedcast_requests_total", (("code", "200"),))] == 1
    assert samples[("ray_feedcast_rate_limited_total", (("key_id", "abc"),))] == 1
