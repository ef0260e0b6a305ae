"""A starting replica yields the CPU to the replicas that are serving.

A feed replica's start is CPU-heavy: a fresh Python imports Ray, torch, LightGBM, MLflow, Feast
and the Cassandra driver, downloads and loads both models and connects. When a replica dies
and Ray Serve starts its replacement on the same cores as the survivors, that start competes
with them for the CPU at the moment they carry the dead one's share of the traffic: on the
2-core machine the survivors' latency rose past the gate's in-flight limit and callers got
503s for seconds after each kill (docs/RELIABILITY.md).

So a replica starts at a lower CPU priority (a higher nice value), set by Ray's
``worker_process_setup_hook`` before any of the replica's code is imported, and takes its
normal priority back when it is ready to serve (the end of ``FeedService.__init__``). Linux
keeps the nice value per thread, and a thread starts with its creator's, so the restore goes
over every thread of the process. Raising the priority back needs the privilege to lower a
nice value (root, or ``RLIMIT_NICE``); where the process lacks it, the start is not slowed at
all, rather than leaving a replica slow for good.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import threading
import time
from pathlib import Path
from typing import Any

from ray._private.ray_constants import WORKER_PROCESS_SETUP_HOOK_ENV_VAR

log = logging.getLogger("feedcast.serving.startup")

# The nice value a replica starts at, relative to the one it serves at; the hook cannot take
# arguments, so the deployment passes it in the replica's environment.
ENV = "FEEDCAST_STARTUP_NICE"
_BASE_ENV = "FEEDCAST_SERVING_NICE"


def can_restore(base: int) -> bool:
    """Whether this process may set its nice value back to ``base`` after raising it."""
    if os.geteuid() == 0:
        return True
    soft, _ = resource.getrlimit(resource.RLIMIT_NICE)
    # RLIMIT_NICE's ceiling on priority is 20 - rlim_cur (RLIM_INFINITY: no ceiling).
    return soft == resource.RLIM_INFINITY or 20 - soft <= base


def _threads() -> list[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:  # no /proc: only the calling thread
        return [0]


def lower_priority() -> None:
    """Ray's ``worker_process_setup_hook`` for feed replicas: start at base + N, and only where
    the replica may come back to base when ready (``restore_priority``)."""
    _start_lowered(restorable=True)


def stay_lower() -> None:
    """Ray's ``worker_process_setup_hook`` for the upload tier's replicas: at base + N from the
    first instruction, for good: the tier runs nicer than the feed all its life, its start
    included (``serving/upload_app._actor_options``); and inside the tier's CPU cap where the
    environment names one (``core/cpucap.py``)."""
    from core import cpucap  # no Ray, no feedcast imports: cheap in a starting worker

    _start_lowered(restorable=False)
    cpucap.join_from_env()


def _start_lowered(*, restorable: bool) -> None:
    """Every thread (Ray's own too: all of the start yields) at base + the step in ``ENV``; the
    base kept in the environment for ``restore_priority`` and ``base_priority``."""
    step = int(os.environ.get(ENV, "0") or 0)
    base = os.getpriority(os.PRIO_PROCESS, 0)
    if step <= 0 or (restorable and not can_restore(base)):
        return
    os.environ[_BASE_ENV] = str(base)
    set_priority(min(base + step, 19))


def base_priority() -> int:
    """The nice value this process had before a setup hook lowered it (else its current one)."""
    return int(os.environ.get(_BASE_ENV, os.getpriority(os.PRIO_PROCESS, 0)))


def actor_options(
    cpus: float, hook: str, step: int, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """A replica's ``ray_actor_options``: ``cpus`` logical CPUs, and with ``step`` > 0 or
    ``env`` the setup hook ``hook`` (``lower_priority`` or ``stay_lower``) given ``step`` and
    ``env`` in the environment. By its environment variable: Ray converts a
    ``worker_process_setup_hook`` field only in ``ray.init``'s job-wide runtime_env, not in an
    actor's."""
    options: dict[str, Any] = {"num_cpus": cpus}
    if step > 0 or env:
        options["runtime_env"] = {
            "env_vars": {WORKER_PROCESS_SETUP_HOOK_ENV_VAR: hook, ENV: str(step), **(env or {})}
        }
    return options


def restore_priority() -> int:
    """Every thread of this process back to the priority it started with; returns how many
    threads were changed (0 when the start was not lowered)."""
    base = os.environ.pop(_BASE_ENV, None)
    if base is None:
        return 0
    changed = set_priority(int(base))
    log.info("replica ready: %d threads back to nice %s", changed, base)
    return changed


def set_priority(nice: int) -> int:
    """Every thread of this process at ``nice``; returns how many were changed."""
    changed = 0
    for tid in _threads():
        with contextlib.suppress(OSError):
            if os.getpriority(os.PRIO_PROCESS, tid) != nice:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
                changed += 1
    return changed


def set_idle() -> int:
    """Every thread of this process under ``SCHED_IDLE`` (threads it starts later inherit it):
    it runs only on CPU no normal thread wants. Stronger than any nice value: a nice-10 thread
    still takes about a tenth of a busy core from the feed. Returns how many threads were
    changed."""
    changed = 0
    for tid in _threads():
        with contextlib.suppress(OSError):
            if os.sched_getscheduler(tid) != os.SCHED_IDLE:
                os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
                changed += 1
    return changed


def policy_of_threads(pid: int) -> list[int]:
    """The scheduling policy of each thread of ``pid`` (``os.SCHED_*``; field 41 of stat)."""
    return _stat_of_threads(pid, 41)


def nice_of_threads(pid: int) -> list[int]:
    """The nice value of each thread of ``pid`` (field 19 of /proc/PID/task/TID/stat)."""
    return _stat_of_threads(pid, 19)


def _stat_of_threads(pid: int, field: int) -> list[int]:
    """Field ``field`` (1-based, as proc(5) numbers them) of each thread's stat line."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            # past the command's closing parenthesis the fields start at field 3
            out.append(int((task / "stat").read_text().rsplit(")", 1)[1].split()[field - 3]))
    return out


def own_session(nice: int, idle: bool = False, name: str | None = None) -> str:
    """Make the calling process a scheduling group of its own, ``nice`` below the rest: a new
    session (the kernel's autogroup follows the session) whose autogroup nice is ``nice``, and
    the process itself at ``nice`` (and ``SCHED_IDLE`` with ``idle``). For a process pool's
    initializer: a pool's process is never a group leader, so ``setsid`` succeeds there.

    Why the group matters: with ``sched_autogroup_enabled`` the kernel first shares the CPU
    between sessions, then within each. A Ray node's workers all share the raylet's session,
    so the upload tier's threads, however nice (even ``SCHED_IDLE``), spend the same group's
    share as the feed's replicas: a busy tier then puts the feed behind every other session,
    Cassandra's included (measured: docs/RELIABILITY.md). Returns the autogroup line read
    back (``/autogroup-N nice M``). ``name``: the process's name in ``ps`` and ``top``
    (``/proc/self/comm``, 15 bytes at most)."""
    if name:
        with contextlib.suppress(OSError):
            Path("/proc/self/comm").write_text(name[:15])
    with contextlib.suppress(OSError):
        os.setsid()
    with contextlib.suppress(OSError):
        Path("/proc/self/autogroup").write_text(str(nice))  # raising it needs no privilege
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, max(nice, os.getpriority(os.PRIO_PROCESS, 0)))
    if idle:
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    return autogroup()


def exit_with_parent(parent: int, every_s: float = 1.0) -> None:
    """End this process when ``parent`` is gone (checked every ``every_s`` by a daemon thread).
    For a process in a session of its own: a signal to its parent's process group (``ray
    stop``, a killed worker) does not reach it, and a pool's process holds both ends of its task
    pipe, so it would wait for tasks forever."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every_s)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def own_group_of(parent: int, nice: int, idle: bool = False, name: str | None = None) -> str:
    """:func:`own_session` for a pool's process that ends with ``parent`` (its creator's pid):
    the initializer of the upload tier's render process."""
    exit_with_parent(parent)
    return own_session(nice, idle, name)


def autogroup() -> str:
    """This process's autogroup line, ``/autogroup-N nice M`` (``no autogroup`` without)."""
    try:
        return Path("/proc/self/autogroup").read_text().strip()
    except OSError:
        return "no autogroup"
