"""Open-loop load with the machine's CPU bill: what one request costs, and who pays it.

Every figure is the machine's: busy CPU time from ``/proc/stat`` over the window (every core,
all but idle and iowait) divided by the requests answered. The same window's per-process times
(``/proc/PID/stat`` utime + stime, threads included) are summed into groups (:data:`GROUPS`) by
what each process is; ``other`` is the machine's busy time the groups do not account for
(kernel threads, interrupts, processes that came and went), so the groups sum to the total.

The generator is the lean raw HTTP client (``bench/rawhttp.py``) on this process's event loop:
requests start at a fixed rate whatever the answers do (open loop), each on a kept-alive
connection from a pool. Its own CPU is the ``generator`` group.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.rawhttp import RawClient

GROUPS = (
    "nginx",
    "ingress",
    "replicas",
    "uploads",
    "ray",
    "origin",
    "cassandra",
    "redis",
    "mlflow",
    "generator",
    "monitoring",
    "other",
)
_HZ = os.sysconf("SC_CLK_TCK")


def busy_ms() -> float:
    """Busy CPU time of the whole machine since boot (every core), in ms."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / _HZ * 1000


def group_of(pid: int, comm: str, cmdline: bytes) -> str:
    """Which of :data:`GROUPS` a process belongs to, from its name and command line."""
    if pid == os.getpid():
        return "generator"
    cmd = cmdline.replace(b"\0", b" ")
    if comm == "nginx":
        return "nginx"
    if comm == "haproxy" or cmd.startswith((b"ray::ProxyActor", b"ray::HAProxyManager")):
        return "ingress"
    if cmd.startswith(b"ray::ServeReplica:feedcast-uploads:") or comm == "feedcast-render":
        return "uploads"  # the upload tier (API and workers): idle in the feed benches
    if cmd.startswith(b"ray::ServeReplica"):
        return "replicas"
    if comm in ("raylet", "gcs_server") or cmd.startswith(b"ray::") or b"/ray/" in cmd:
        return "ray"
    if comm == "java" and b"cassandra" in cmd:
        return "cassandra"
    # Prometheus, Alertmanager, the exporters (comm is cut at 15 bytes) and the responder
    if comm.startswith(("prometheus", "alertmanager", "mtail")) or b"pipelines.responder" in cmd:
        return "monitoring"
    if comm.startswith("redis"):
        return "redis"
    if b"mlflow" in cmd:
        return "mlflow"
    if b"media.origin" in cmd:
        return "origin"
    return "other"


def read_stat(path: str | Path) -> tuple[str, float]:
    """(name, CPU time so far in ms, utime + stime) from a ``/proc/PID/stat`` or
    ``/proc/PID/task/TID/stat`` file; OSError when it is gone."""
    head, _, rest = Path(path).read_text().rpartition(")")
    fields = rest.split()
    return head.partition("(")[2], (int(fields[11]) + int(fields[12])) / _HZ * 1000


def processes() -> dict[int, tuple[str, str, float]]:
    """Every process: its group, its command line (or name) and its CPU time so far (ms)."""
    out = {}
    for d in os.scandir("/proc"):
        if not d.name.isdigit():
            continue
        try:
            comm, ms = read_stat(Path(d.path, "stat"))
            cmdline = Path(d.path, "cmdline").read_bytes()
        except OSError:  # gone while we looked
            continue
        pid = int(d.name)
        name = cmdline.replace(b"\0", b" ").decode(errors="replace").strip() or comm
        out[pid] = (group_of(pid, comm, cmdline), name, ms)
    return out


@dataclass
class CpuMeter:
    """Machine and per-group CPU over a window: ``start()``, the load, ``stop()``."""

    total_ms: float = 0.0
    groups_ms: dict[str, float] = field(default_factory=dict)
    wall_ms: float = 0.0
    _busy: float = 0.0
    _at: float = 0.0
    # (pid, command line) → CPU over the window (ms), every process that ran in it
    processes_ms: dict[tuple[int, str], float] = field(default_factory=dict)
    _procs: dict[int, tuple[str, str, float]] = field(default_factory=dict)

    def start(self) -> None:
        self._procs, self._busy, self._at = processes(), busy_ms(), time.monotonic()

    def stop(self) -> None:
        busy, procs = busy_ms(), processes()
        self.wall_ms = (time.monotonic() - self._at) * 1000
        self.total_ms = busy - self._busy
        groups = dict.fromkeys(GROUPS, 0.0)
        self.processes_ms = {}
        for pid, (group, name, ms) in procs.items():
            before = self._procs.get(pid)
            used = ms - (before[2] if before else 0.0)
            groups[group] += used
            self.processes_ms[(pid, name)] = used
        groups["other"] = 0.0
        groups["other"] = max(0.0, self.total_ms - sum(groups.values()))
        self.groups_ms = groups

    def busiest(self, n: int) -> list[tuple[float, int, str]]:
        """The ``n`` processes that used the most CPU over the window: (ms, pid, command line),
        busiest first."""
        return heapq.nlargest(n, ((ms, pid, cmd) for (pid, cmd), ms in self.processes_ms.items()))

    def per_request(self, answered: int) -> tuple[float, dict[str, float]]:
        n = max(answered, 1)
        return self.total_ms / n, {g: ms / n for g, ms in self.groups_ms.items()}

    def cores(self, group: str) -> float:
        """The group's CPU over the window in cores (1.0: one core busy all the time)."""
        return self.groups_ms.get(group, 0.0) / max(self.wall_ms, 1e-9)


@dataclass
class Run:
    """One open-loop window: what was offered, what came back, and what it cost."""

    offered_rps: float
    seconds: float
    started: int = 0
    ok: int = 0
    errors: int = 0  # transport errors, timeouts and any status but 200
    degraded: int = 0  # 200 pages whose ``degraded`` list is not empty
    statuses: dict[int, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    candidates: list[int] = field(default_factory=list)
    cpu_ms_per_request: float = math.nan
    cpu_ms_by_group: dict[str, float] = field(default_factory=dict)
    cpu_total_ms: float = 0.0
    monitoring_cores: float = math.nan  # Prometheus, Alertmanager, exporters, responder

    def quantile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else math.inf

    @property
    def answered_rps(self) -> float:
        return self.ok / self.seconds

    @property
    def error_rate(self) -> float:
        """Errors and degraded pages over the requests started."""
        return (self.errors + self.degraded) / max(self.started, 1)

    def summary(self) -> dict[str, Any]:
        return {
            "offered_rps": self.offered_rps,
            "answered_rps": round(self.answered_rps, 2),
            "requests": self.started,
            "ok": self.ok,
            "errors": self.errors,
            "degraded": self.degraded,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "error_rate": self.error_rate,
            "p50_ms": self.quantile(50),
            "p90_ms": self.quantile(90),
            "p99_ms": self.quantile(99),
            "mean_candidates": float(np.mean(self.candidates)) if self.candidates else 0.0,
            "cpu_ms_per_request": self.cpu_ms_per_request,
            "cpu_ms_by_group": {k: round(v, 3) for k, v in self.cpu_ms_by_group.items()},
            "monitoring_cores": round(self.monitoring_cores, 4),
        }


Target = Callable[[int], tuple[str, dict[str, Any]]]  # request k → (path, query)


async def open_loop(
    url: str,
    headers: dict[str, str],
    target: Target,
    rate: float,
    seconds: float,
    *,
    timeout_s: float = 5.0,
    is_page: bool = True,
    on_body: Callable[[int, dict[str, Any]], None] | None = None,
) -> Run:
    """``rate`` requests/s for ``seconds``, evenly spaced, each ``target(k)``; CPU measured
    from the first request to the last answer (or its timeout). ``on_body(k, body)`` sees each
    page answered 200 (e.g. to queue the cursor it carries)."""
    run = Run(offered_rps=rate, seconds=seconds)
    meter = CpuMeter()

    async def one(c: RawClient, k: int) -> None:
        path, query = target(k)
        t = time.perf_counter()
        try:
            r = await c.get(path, query)
        except Exception:
            run.errors += 1
            return
        run.statuses[r.status] = run.statuses.get(r.status, 0) + 1
        if r.status != 200:
            run.errors += 1
            return
        run.latencies_ms.append((time.perf_counter() - t) * 1000)
        run.ok += 1
        if is_page:
            body = r.json()
            run.degraded += bool(body.get("degraded"))
            run.candidates.append(int(body.get("candidates", 0)))
            if on_body is not None:
                on_body(k, body)

    async with RawClient(url, headers, timeout_s=timeout_s, max_idle=512) as c:
        tasks = []
        meter.start()
        start = time.monotonic()
        n = max(1, int(rate * seconds))
        for k in range(n):
            delay = start + k / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(c, k)))
        run.started = n
        await asyncio.gather(*tasks)
        meter.stop()
    run.cpu_ms_per_request, run.cpu_ms_by_group = meter.per_request(run.ok)
    run.cpu_total_ms = meter.total_ms
    run.monitoring_cores = meter.cores("monitoring")
    return run


def passes(run: Run, p99_bar_ms: float) -> bool:
    """Every request answered 200 and not degraded, with p99 within the bar."""
    return run.errors == 0 and run.degraded == 0 and run.quantile(99) <= p99_bar_ms


async def search(ok: Callable[[int], Awaitable[bool]], *, step: int, start: int, most: int) -> int:
    """The highest rate (a multiple of ``step``) for which ``ok`` holds, assuming it holds
    below a passing rate: doubling from ``start`` until a rate fails, then bisecting in
    ``step`` steps between the last pass and that failure (0: not even ``start``)."""
    lo, hi = 0, start
    while hi <= most and await ok(hi):
        lo, hi = hi, hi * 2
    hi = min(hi, most + step)
    while hi - lo > step:
        mid = (lo + hi) // 2 // step * step
        if mid <= lo:
            break
        if await ok(mid):
            lo = mid
        else:
            hi = mid
    return lo


async def capacity(
    measure: Callable[[float], Any],
    p99_bar_ms: float,
    *,
    step: int = 10,
    most: int = 1000,
    known: dict[float, Run] | None = None,
) -> tuple[float, dict[float, Run]]:
    """The highest offered rate (a multiple of ``step``) that :func:`passes`: doubling from
    ``step`` until a rate fails, then bisecting between the last pass and that failure.
    ``measure(rate)`` runs one window; ``known`` holds windows already run (reused)."""
    runs: dict[float, Run] = dict(known or {})

    async def ok(rate: int) -> bool:
        if rate not in runs:
            runs[rate] = await measure(rate)
            await asyncio.sleep(2)  # let queues drain between windows
        return passes(runs[rate], p99_bar_ms)

    lo = await search(ok, step=step, start=step, most=most)
    return float(lo), runs
