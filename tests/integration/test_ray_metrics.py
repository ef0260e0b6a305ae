"""Feed metrics recorded in a Ray actor reach the node's Prometheus endpoint.

Needs a Ray head of its own (started in a child interpreter, on a free metrics port): a service,
so it lives here and not in tests/unit.
"""

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.suite import free_ports

pytestmark = [pytest.mark.integration, pytest.mark.slow]

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
# A poll with a deadline (not a bare sleep), in the child's own script: until every series shows.
text, deadline = "", time.time() + 90
while time.time() < deadline and not all(f"ray_{n}" in text for n in names):
    time.sleep(1)
    text = urllib.request.urlopen(f"http://{targets[0]}/metrics", timeout=5).read().decode()
ray.shutdown()
print(json.dumps({"targets": targets, "text": text}))
"""


def test_metrics_recorded_in_a_ray_actor_are_served_on_the_nodes_metrics_port(tmp_path: Path):
    (port,) = free_ports(1)
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
