"""Processes the stack starts: pid files, detached start, stop by pid (never by name)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


class StackError(RuntimeError):
    """A stack component is missing or would not start; the message says what to do."""


def pid_file(stack_dir: Path, name: str) -> Path:
    return stack_dir / f"{name}.pid"


def read_pid(stack_dir: Path, name: str) -> int | None:
    """The pid recorded for ``name`` if that process is still alive, else None."""
    path = pid_file(stack_dir, name)
    if not path.exists():
        return None
    try:
        pid = int(path.read_text().strip())
    except ValueError:
        return None
    return pid if _alive(pid) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as dead.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


# Variables that belong to this process's lifetime and must not leak into long-lived children:
# importing feast points prometheus_client at a temp folder it deletes when this process exits,
# and a Ray head inheriting it would start replicas that fail on the missing folder.
_TRANSIENT_ENV = ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR")


def start(
    stack_dir: Path,
    name: str,
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start ``argv`` in its own session, log to ``<stack_dir>/logs/<name>.log``, record its pid."""
    logs = stack_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    child_env = {k: v for k, v in os.environ.items() if k not in _TRANSIENT_ENV}
    child_env.update(env or {})
    with open(logs / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=child_env,
            cwd=cwd,
        )
    pid_file(stack_dir, name).write_text(str(proc.pid))
    return proc.pid


def stop(stack_dir: Path, name: str, *, grace_s: float = 30.0) -> bool:
    """Stop the process group recorded for ``name``; True if something was stopped."""
    pid = read_pid(stack_dir, name)
    pid_file(stack_dir, name).unlink(missing_ok=True)
    if pid is None:
        return False
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not _alive(pid) and not _group_alive(pid):
            return True
        _reap(pid)
        time.sleep(0.2)
    _signal_group(pid, signal.SIGKILL)
    _reap(pid)
    return True


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    # Zombies in the group still answer killpg; count only live members.
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().split(")")[-1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def wait_until(
    check: Callable[[], bool],
    *,
    timeout_s: float,
    what: str,
    log: Path | None = None,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Poll ``check`` until it is true; raise StackError naming ``what`` and its log if not."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        if alive is not None and not alive():
            break
        time.sleep(0.5)
    tail = ""
    if log is not None and log.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
    raise StackError(f"{what} did not become healthy (log: {log})\n{tail}")


def apt_install(find: Callable[[], str | None], package: str, what: str) -> str:
    """The binary ``find`` locates; installed from Debian's ``package`` first when missing and
    this runs as root with apt-get (else a StackError saying what to install)."""
    path = find()
    if path:
        return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        for cmd in (
            ["apt-get", "update", "-q"],
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", package],
        ):
            subprocess.run(cmd, capture_output=True, timeout=600, check=False)
        path = find()
    if not path:
        raise StackError(f"{what} not found: install it (apt-get install {package})")
    return path


def launch(
    stack_dir: Path,
    name: str,
    argv: list[str],
    *,
    answers: Callable[[], bool],
    what: str,
    timeout_s: float = 30,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    log: Path | None = None,
) -> int:
    """:func:`start`, then wait until ``answers()`` (failing early if the process dies); a
    failure shows the end of ``log`` (default: the process's own log)."""
    pid = start(stack_dir, name, argv, env=env, cwd=cwd)
    wait_until(
        answers,
        timeout_s=timeout_s,
        what=what,
        log=log or stack_dir / "logs" / f"{name}.log",
        alive=lambda: read_pid(stack_dir, name) == pid,
    )
    return pid
