"""A local Ray head that outlives the command that deployed the feed service.

``ray start --block`` runs in its own session under our pid file; stopping that process group
stops exactly this head, never another Ray on the machine.
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
from pathlib import Path

from core import cpucap
from core.settings import Settings
from stack import ingress, proc

NAME = "ray"


def name(settings: Settings) -> str:
    """Pid-file name: one head per GCS port (a bench or chaos head beside the demo's)."""
    return NAME if settings.ray_port == 6380 else f"{NAME}-{settings.ray_port}"


def address(settings: Settings) -> str:
    return settings.ray_address or f"127.0.0.1:{settings.ray_port}"


def auth_env(settings: Settings) -> dict[str, str]:
    """Token authentication with a token the stack owns (not the user's ~/.ray/auth_token).

    Exported into this process too, so that ``ray.init`` here presents the same token.
    """
    path = settings.stack_dir / "ray" / "auth_token"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(path)}
    os.environ.update(env)
    return env


def running(settings: Settings) -> bool:
    return proc.read_pid(settings.stack_dir, name(settings)) is not None


def _gcs_up(settings: Settings) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", settings.ray_port), timeout=1.0):
            return True
    except OSError:
        return False


def up(settings: Settings) -> str:
    if settings.ray_address:
        return f"using the cluster at {settings.ray_address}"
    # Ray starts workers at nice 15 by default; replicas serving requests must not yield the
    # CPU to the databases and load generators beside them.
    env = {
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_worker_niceness": "0",
        **auth_env(settings),
        **ingress.environment(settings),
    }
    if running(settings):
        return "already running"
    ingress.stop_orphans(settings)  # a HAProxy left by a head killed without its shutdown
    tmp = Path("/tmp") / f"ray-feedcast-{settings.ray_port}"
    argv = [
        str(Path(sys.executable).parent / "ray"),
        "start",
        "--head",
        "--block",
        "--node-ip-address",
        "127.0.0.1",
        "--port",
        str(settings.ray_port),
        "--include-dashboard",
        "false",
        "--disable-usage-stats",
        "--metrics-export-port",
        str(settings.ray_metrics_port),
        "--object-store-memory",
        str(settings.ray_object_store_mb * 1024 * 1024),
        "--temp-dir",
        str(tmp),
    ]
    pid = proc.start(settings.stack_dir, name(settings), argv, env=env)
    proc.wait_until(
        lambda: _gcs_up(settings),
        timeout_s=90,
        what="Ray head",
        log=settings.stack_dir / "logs" / f"{name(settings)}.log",
        alive=lambda: proc.read_pid(settings.stack_dir, name(settings)) == pid,
    )
    return f"started (pid {pid}) at {address(settings)}"


def down(settings: Settings) -> bool:
    stopped = proc.stop(settings.stack_dir, name(settings), grace_s=30)
    # The head is gone: whatever HAProxy of its folder is left (orphaned, or about to be) is
    # stopped, or the next head on these ports cannot bind them (seen in make chaos).
    ingress.stop_orphans(settings, any_parent=True)
    cpucap.remove(cpucap.group_name(settings.ray_port))  # the upload tier's CPU cap, if empty
    return stopped


def replica_pids(raylet_marker: str, deployment: str = "feedcast:Feed") -> list[int]:
    """Pids of the Serve replicas of ``deployment`` (``app:Deployment`` prefix) whose raylet's
    command line contains ``raylet_marker`` (its temp folder or session dir): Ray titles a
    replica's process ``ray::ServeReplica:<app>:<deployment>``, and the state API would need the
    dashboard, which the stack's head runs without."""
    pids = []
    title = f"ray::ServeReplica:{deployment}".encode()
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit():
            continue
        try:
            if not (proc_dir / "cmdline").read_bytes().startswith(title):
                continue
            ppid = (proc_dir / "stat").read_text().rsplit(")", 1)[1].split()[1]
            if raylet_marker.encode() in Path(f"/proc/{ppid}/cmdline").read_bytes():
                pids.append(int(proc_dir.name))
        except OSError:  # gone while we looked
            continue
    return sorted(pids)
