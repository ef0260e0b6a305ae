"""The upload tier takes a job only when the machine has CPU to spare for it.

A worker renders at nice 19 in a scheduling group of its own, and CPU work at that priority
costs the feed nothing (``upload_cpu_control``, docs/RELIABILITY.md). An upload job is more than
its render: blob reads and writes, Cassandra writes and lightweight transactions, the fan-out's
Redis scripts. Those wake the feed's own I/O threads and queue beside its reads whatever the
worker's nice value, and during a burst of uploads on shared cores the feed's p99 rose with them.

So before each job a worker looks at how much of the machine is idle (``/proc/stat``, over the
last second or so) and, while less than ``upload_min_idle_cores`` is, waits in short steps, for
at most ``upload_yield_max_s``: the tier fills the CPU the feed leaves and backs off when the
feed needs it, and a job is delayed, never dropped (it waits in the worker's queue, its lease and
the sweeper unchanged). The tier's own work counts as busy too, so workers that start jobs
together see the machine fill and the next ones wait. On a node of a cluster it is that node's
CPU, which is the CPU the worker competes for. Where ``/proc/stat`` cannot be read (not Linux) a
worker never waits.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

PROC_STAT = Path("/proc/stat")
WINDOW_S = 1.0  # idle CPU is measured over about this long
STEP_S = 0.2  # a waiting worker looks again this often


def read_cpu(path: Path = PROC_STAT) -> tuple[float, float, int] | None:
    """(idle ticks, total ticks, CPUs) from ``/proc/stat``'s summary line; None if unreadable.
    Idle includes iowait: a CPU waiting on I/O is free to run a thread."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    if not lines or not lines[0].startswith("cpu "):
        return None
    fields = [float(x) for x in lines[0].split()[1:]]
    if len(fields) < 5:
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice: already in user/nice]
    total = sum(fields[:8])
    cpus = sum(1 for line in lines[1:] if line.startswith("cpu") and line[3:4].isdigit())
    return fields[3] + fields[4], total, cpus or (os.cpu_count() or 1)


class Headroom:
    """The machine's idle CPU in cores over the last ``window_s``, shared by a worker's jobs."""

    def __init__(
        self,
        read: Callable[[], tuple[float, float, int] | None] = read_cpu,
        clock: Callable[[], float] = time.monotonic,
        window_s: float = WINDOW_S,
    ) -> None:
        self._read, self._clock, self.window_s = read, clock, window_s
        self._samples: deque[tuple[float, float, float]] = deque()  # (time, idle, total)
        self._cpus = 1
        self.readable = True  # False once /proc/stat could not be read
        self._lock = threading.Lock()

    def idle_cores(self) -> float | None:
        """Idle cores between the newest sample at least ``window_s`` old (else the oldest)
        and now; None when ``/proc/stat`` is unreadable or there is nothing recent to compare
        with (the first look, or the first after a quiet spell)."""
        got = self._read()
        self.readable = got is not None
        if got is None:
            return None
        idle, total, self._cpus = got
        now = self._clock()
        with self._lock:
            if self._samples and now - self._samples[-1][0] > 2 * self.window_s:
                self._samples.clear()  # no look for a while: the next one measures afresh
            while len(self._samples) > 1 and now - self._samples[1][0] >= self.window_s:
                self._samples.popleft()  # keep one sample at least window_s old
            base = self._samples[0] if self._samples else None
            self._samples.append((now, idle, total))
        if base is None or total <= base[2]:
            return None
        return self._cpus * (idle - base[1]) / (total - base[2])

    def wait(
        self,
        min_idle: float,
        max_wait_s: float,
        sleep: Callable[[float], None] = time.sleep,
    ) -> float:
        """Wait while fewer than ``min_idle`` cores are idle, at most ``max_wait_s``; returns
        the seconds waited (0 when there was room, ``min_idle`` is 0 or the CPU unreadable)."""
        if min_idle <= 0 or max_wait_s <= 0:
            return 0.0
        start = self._clock()
        if self.idle_cores() is None:
            if not self.readable:
                return 0.0
            sleep(STEP_S)  # the first look: a second sample a step later
        while True:
            idle = self.idle_cores()
            waited = self._clock() - start
            if idle is None or idle >= min_idle or waited >= max_wait_s:
                return waited
            sleep(min(STEP_S, max_wait_s - waited))
