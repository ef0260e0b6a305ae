"""The ahead-of-session job's schedule: a real APScheduler, fired on a short interval."""

from __future__ import annotations

import threading
import time

import pytest

from prefetch.ahead import schedule
from tests.waiting import wait_until


def test_runs_at_once_then_on_the_interval() -> None:
    runs: list[float] = []
    sched = schedule(lambda: runs.append(time.monotonic()), 0.3, blocking=False)
    try:
        wait_until(lambda: len(runs) >= 3, timeout=10, interval=0.05, what="three runs")
    finally:
        sched.shutdown(wait=True)
    assert len(runs) >= 3
    assert runs[2] - runs[0] >= 0.5  # not all at once: spaced by the interval


def test_a_slow_run_is_never_overlapped() -> None:
    active, most, started = 0, 0, 0
    lock = threading.Lock()

    def slow() -> None:
        nonlocal active, most, started
        with lock:
            active += 1
            started += 1
            most = max(most, active)
        time.sleep(0.5)  # the run's own length (five intervals): what must not be overlapped
        with lock:
            active -= 1

    sched = schedule(slow, 0.1, blocking=False)
    try:  # three starts: while the first two ran, due times kept passing (every 0.1 s)
        wait_until(lambda: started >= 3, timeout=10, interval=0.05, what="three runs")
    finally:
        sched.shutdown(wait=True)
    assert most == 1


def test_bad_interval() -> None:
    with pytest.raises(ValueError, match="every_s"):
        schedule(lambda: None, 0, blocking=False)
