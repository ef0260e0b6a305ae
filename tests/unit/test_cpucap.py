"""The upload tier's CPU cap (``core/cpucap.py``): what it writes, what it says when it cannot,
and, where this machine lets a process make a cgroup, that the kernel holds a busy process to
the quota."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

from core import cpucap
from core.settings import UPLOAD_WORKERS_UNCAPPED, Settings


def _fake_group(root, name: str) -> None:
    """The files the kernel would make in a new cgroup (a plain folder has none)."""
    (root / name).mkdir()
    for f in ("cpu.cfs_period_us", "cpu.cfs_quota_us", "cgroup.procs", "cpu.idle"):
        (root / name / f).write_text("")


def test_join_writes_the_quota_the_period_and_the_pid(tmp_path):
    _fake_group(tmp_path, "g")
    cap = cpucap.join("g", 0.5, root=tmp_path)
    assert (cap.cores, cap.idle) == (0.5, True)
    assert (tmp_path / "g" / "cpu.cfs_quota_us").read_text() == "50000"
    assert (tmp_path / "g" / "cpu.cfs_period_us").read_text() == str(cpucap.PERIOD_US)
    assert (tmp_path / "g" / "cgroup.procs").read_text() == str(os.getpid())
    assert "0.50 cores, idle" in str(cap)


def test_no_controller_leaves_the_process_uncapped_and_says_why(tmp_path):
    cap = cpucap.join("g", 0.5, root=tmp_path / "not-mounted")
    assert cap.cores == 0 and "not-mounted" in cap.why and str(cap).startswith("no CPU cap")
    assert cpucap.join("g", 0.0, root=tmp_path).cores == 0  # a fraction of 0: no cap asked


def test_the_upload_ceiling_follows_the_cores_the_cap_grants(monkeypatch):
    # One worker per capped core, rounded up: a second under a 0.5-core cap only adds its start.
    assert cpucap.workers_for(0.25, cpus=2) == 1
    assert cpucap.workers_for(0.5, cpus=2) == 1
    assert cpucap.workers_for(0.75, cpus=2) == 2
    assert cpucap.workers_for(0.25, cpus=16) == 4
    assert cpucap.workers_for(0.0, cpus=16) is None
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert Settings().upload_workers_max == 1
    assert Settings(upload_cpu_fraction=0).upload_workers_max == UPLOAD_WORKERS_UNCAPPED
    assert Settings(upload_cpu_fraction=1).upload_workers_max == 2
    assert Settings(upload_max_replicas=3).upload_workers_max == 3  # asked for: kept


def test_the_setup_hooks_environment_names_the_stacks_group():
    env = cpucap.env(6380, 0.25)
    assert env[cpucap.ENV_GROUP] == "feedcast-uploads-6380"
    assert float(env[cpucap.ENV_CORES]) == cpucap.cores_for(0.25) == 0.25 * os.cpu_count()
    assert cpucap.env(6380, 0.0) == {}


def test_throttled_reads_cpu_stat_and_remove_keeps_a_busy_group(tmp_path):
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "cpu.stat").write_text("nr_periods 10\nnr_throttled 4\nthrottled_time 7\n")
    assert cpucap.throttled("g", root=tmp_path) == {
        "nr_periods": 10, "nr_throttled": 4, "throttled_time": 7,
    }  # fmt: skip
    assert cpucap.throttled("absent", root=tmp_path) == {}
    # not empty: a plain folder with a file stands in for a group a process is in
    assert not cpucap.remove("g", root=tmp_path, wait_s=0.3)
    assert cpucap.remove("absent", root=tmp_path)


_BUSY = """
import json, sys, time
from core import cpucap
cap = cpucap.join(sys.argv[1], 0.3)
t, c = time.monotonic(), time.process_time()
while time.monotonic() - t < 2.0:
    pass
print(json.dumps({"cores": cap.cores, "why": cap.why, "used": (time.process_time() - c) / 2.0,
                  "in": cpucap.of_process()}))
"""


def test_the_kernel_holds_a_busy_process_to_its_quota():
    """A spinning process in a 0.3-core group uses about 0.3 of a core; without the controller
    (no root, cgroup v2 only) it says why and spins free."""
    group = f"{cpucap.PREFIX}test-{uuid.uuid4().hex[:8]}"
    try:
        out = subprocess.run(
            [sys.executable, "-c", _BUSY, group], capture_output=True, text=True, timeout=60
        )
        got = json.loads(out.stdout)
    finally:
        cpucap.remove(group, wait_s=0)
    if not os.access(cpucap.ROOT, os.W_OK):
        assert got["cores"] == 0 and got["why"] and got["in"] == cpucap.of_process()
        return
    assert got["cores"] == 0.3 and got["in"] == f"/{group}"
    assert 0.15 < got["used"] < 0.4  # a free spin takes a whole core
