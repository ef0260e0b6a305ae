"""A hard CPU cap on the upload tier: its processes on a node share one cgroup (the v1 ``cpu``
controller) with a CFS quota of ``upload_cpu_fraction`` of the node's cores, and the group is
an idle one (``cpu.idle``) where the kernel has it.

Why a cap and not only a priority: nice 19 in a scheduling group of its own
(``startup.own_session``) still lets a burst of renders take every cycle the feed leaves, and on
2 cores that left the machine 1.93-1.96 cores busy under an upload burst, with every feed
stage's p99 2-4x its control's, pure CPU stages included (docs/RELIABILITY.md, 2026-12-07
night): a woken feed thread waits behind the running render, and with the GIL its siblings
wait too. Under a quota the tier can never take the last free core; its jobs wait instead (none
is lost: they are durable rows). A worker joins the group from the first instruction (Ray's
setup hook, ``startup.stay_lower``), so a scale-up's start is capped too, and the render
processes it spawns inherit the group.

On a cluster each node has its own group (the quota is per node). Where the controller is not
mounted or not writable (no root, cgroup v2 only), nothing is capped: the tier logs why and
``feedcast_upload_cpu_cap_cores`` reads 0."""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup/cpu")
PREFIX = "feedcast-uploads-"
PERIOD_US = 100_000
# Ray's setup hook takes no arguments: the group and its size travel in the environment.
ENV_GROUP = "FEEDCAST_CPU_GROUP"
ENV_CORES = "FEEDCAST_CPU_CORES"
NOT_ASKED = "upload_cpu_fraction is 0"


@dataclass(frozen=True)
class Cap:
    """Where this process stands: ``cores`` 0 when nothing caps it (``why`` says why)."""

    group: str
    cores: float
    idle: bool
    why: str = ""

    @property
    def asked(self) -> bool:
        """Whether a cap was asked for (``upload_cpu_fraction`` > 0): an uncapped process
        that asked for one is degraded; one that did not is as configured."""
        return self.why != NOT_ASKED

    def __str__(self) -> str:
        if not self.cores:
            return f"no CPU cap ({self.why})"
        return f"cgroup cpu:/{self.group}, {self.cores:.2f} cores{', idle' * self.idle}"


def group_name(ray_port: int) -> str:
    """One group per stack (its Ray port) on a node: two stacks on one machine cap apart."""
    return f"{PREFIX}{ray_port}"


def cores_for(fraction: float, cpus: int | None = None) -> float:
    """``fraction`` of this node's cores (0: no cap)."""
    return max(0.0, fraction) * (cpus or os.cpu_count() or 1)


def workers_for(fraction: float, cpus: int | None = None) -> int | None:
    """The upload workers worth having on a node under its cap: one per core the cap grants,
    rounded up, since a worker renders a job at a time on about one core (None: no cap asked).
    Past that, another worker shares the same quota: it adds no uploads per second, only its
    start, and a scale-up's start was a burst's worst seconds for the feed (2 workers under a
    0.5-core cap: 0.33-0.42 uploads/s, as one; docs/RELIABILITY.md, 2026-12-08)."""
    cores = cores_for(fraction, cpus)
    return max(1, math.ceil(cores - 1e-9)) if cores > 0 else None


def env(ray_port: int, fraction: float) -> dict[str, str]:
    """The environment that tells the setup hook which group to join ({} with no cap)."""
    cores = cores_for(fraction)
    return {ENV_GROUP: group_name(ray_port), ENV_CORES: f"{cores:.4f}"} if cores > 0 else {}


def join(group: str, cores: float, root: Path = ROOT) -> Cap:
    """Put this process (all its threads, and the children it starts later) in ``group`` with
    a quota of ``cores``, making the group first if needed. Never raises: a failure leaves
    the process where it was and says why."""
    if cores <= 0:
        return Cap(group, 0.0, False, NOT_ASKED)
    where = root / group
    try:
        where.mkdir(exist_ok=True)
        (where / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (where / "cpu.cfs_quota_us").write_text(str(max(1000, round(cores * PERIOD_US))))
        (where / "cgroup.procs").write_text(str(os.getpid()))
    except OSError as exc:
        return Cap(group, 0.0, False, f"{where}: {exc.strerror or exc}")
    idle = False
    with contextlib.suppress(OSError):  # kernels from 5.15; else the quota alone
        (where / "cpu.idle").write_text("1")
        idle = (where / "cpu.idle").read_text().strip() == "1"
    return Cap(group, cores, idle)


def join_from_env() -> Cap | None:
    """The setup hook's step: join the group the environment names (None when it names none)."""
    group, cores = os.environ.get(ENV_GROUP), os.environ.get(ENV_CORES)
    if not group or not cores:
        return None
    return join(group, float(cores))


def of_process(pid: int | str = "self") -> str:
    """The ``cpu`` cgroup path of a process (``/`` for the root), from ``/proc/PID/cgroup``."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "cpu" in controllers.split(","):
            return path
    return "/"


def throttled(group: str, root: Path = ROOT) -> dict[str, int]:
    """The group's ``cpu.stat``: periods, periods throttled and nanoseconds throttled ({} when
    the group is not there)."""
    try:
        text = (root / group / "cpu.stat").read_text()
    except OSError:
        return {}
    return {k: int(v) for k, v in (line.split() for line in text.splitlines() if line)}


def remove(group: str, root: Path = ROOT, wait_s: float = 10.0) -> bool:
    """``feedcast stack down``: remove the group once no process is in it (the kernel refuses
    while one is; a stopped Ray head's workers take a few seconds to exit, so this waits up to
    ``wait_s`` for them); whether it is gone."""
    until = time.monotonic() + wait_s
    while True:
        try:
            (root / group).rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError:
            if time.monotonic() >= until:
                return False
            time.sleep(0.2)


class CapGauges:
    """The cap as metrics, on the node's metrics port: ``feedcast_upload_cpu_cap_cores`` (0:
    not capped, a degraded state worth an alert) and the group's time throttled so far,
    ``feedcast_upload_cpu_throttled_seconds`` (how long the tier's jobs waited for the cap)."""

    def __init__(self, cap: Cap) -> None:
        from ray.util.metrics import Gauge  # lazy: only in the upload worker, where Ray runs

        self.cap = cap
        self._cores = Gauge(
            "feedcast_upload_cpu_cap_cores",
            "The upload tier's CPU cap on this node in cores (0: not capped)",
        )
        self._throttled = Gauge(
            "feedcast_upload_cpu_throttled_seconds",
            "Time the upload tier's processes on this node waited for their CPU cap",
        )

    def update(self) -> dict[str, float]:
        """Export now; nothing to report (a sweep of the worker's loop). No series at all
        where no cap was asked for (``upload_cpu_fraction`` 0): that is not a degraded state."""
        if not self.cap.asked:
            return {}
        self._cores.set(self.cap.cores)
        if self.cap.cores:
            self._throttled.set(throttled(self.cap.group).get("throttled_time", 0) / 1e9)
        return {}
