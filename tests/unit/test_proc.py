import sys

import pytest

from stack import proc
from tests.waiting import wait_until


def test_start_records_a_pid_and_stop_ends_the_whole_group(tmp_path):
    # The child starts a grandchild in the same process group; stop must end both.
    # The child's sleep is the process under test (a group to stop), not a wait of the test.
    script = "import subprocess, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"
    pid = proc.start(tmp_path, "sleeper", [sys.executable, "-c", script])
    assert proc.read_pid(tmp_path, "sleeper") == pid
    assert proc.stop(tmp_path, "sleeper", grace_s=5)
    assert proc.read_pid(tmp_path, "sleeper") is None
    assert not proc._group_alive(pid)


def test_stop_without_a_pid_file_stops_nothing(tmp_path):
    assert proc.stop(tmp_path, "never-started") is False


def test_wait_until_names_the_component_and_shows_its_log(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("boom: port in use\n")
    with pytest.raises(proc.StackError, match="widget did not become healthy") as err:
        proc.wait_until(lambda: False, timeout_s=0.5, what="widget", log=log)
    assert "port in use" in str(err.value)


def test_children_do_not_inherit_this_process_s_prometheus_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "/tmp/gone-when-we-exit")
    out = tmp_path / "env.txt"
    code = (
        f"import os; open({str(out)!r}, 'w').write(os.environ.get('PROMETHEUS_MULTIPROC_DIR', ''))"
    )
    pid = proc.start(tmp_path, "envdump", [sys.executable, "-c", code], env={"X": "1"})
    # Done writing when it has exited (an empty file could also be one not written yet).
    wait_until(
        lambda: out.exists() and proc.read_pid(tmp_path, "envdump") is None,
        timeout=10,
        interval=0.05,
        what=f"the child (pid {pid}) to write {out.name} and exit",
    )
    assert out.read_text() == ""
    proc.stop(tmp_path, "envdump", grace_s=1)
