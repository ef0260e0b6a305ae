"""The CDN edge: Debian's nginx with ``proxy_cache`` in front of the media origin, on 127.0.0.1,
and the API gate in front of Ray Serve (admission control: at most ``gate_max_inflight`` feed
requests in flight, the rest shed with 503 + Retry-After by nginx, in C, before Ray's Python
proxy spends any CPU on them).

The config is rendered from ``stack/conf/nginx.conf`` into the stack folder, with every path
nginx writes (pid, logs, temp files, the cache) under ``<stack_dir>/nginx/``, and checked with
``nginx -t`` before it is started, so that a bad config fails with nginx's own message instead
of a health wait that times out. nginx runs in the foreground (``daemon off``) under
``stack/proc.py``; ``down`` stops it by pid.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path
from string import Template

from core.settings import Settings
from stack import origin, proc

NAME = "edge"
DEFAULT_PORT = 8088
HERE = Path(__file__).resolve().parent
# Temp folders of modules a Debian build may include: each must be moved under the stack folder
# too (nginx creates them at start; the compiled-in /var/lib/nginx is root's).
_OPTIONAL_TEMP_PATHS = ("fastcgi", "uwsgi", "scgi")


class _Conf(Template):
    """``@{NAME}`` placeholders: nginx's own ``$variables`` pass through untouched."""

    delimiter = "@"


def name(settings: Settings) -> str:
    """Pid-file name: one edge per port (the test suite runs its own beside the demo's)."""
    return NAME if settings.edge_port == DEFAULT_PORT else f"{NAME}-{settings.edge_port}"


def home(settings: Settings) -> Path:
    """The edge's folder: config, pid, logs, temp files and the cache."""
    suffix = "" if settings.edge_port == DEFAULT_PORT else f"-{settings.edge_port}"
    return settings.stack_dir / f"nginx{suffix}"


def url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.edge_port}"


def answers(settings: Settings) -> bool:
    return origin.health_says(url(settings), "feedcast edge")


def find() -> str | None:
    """The nginx binary, if installed (Debian puts it in /usr/sbin, often not on a user's PATH)."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")


def ensure_installed() -> str:
    return proc.apt_install(find, "nginx-light", "nginx")


def render(settings: Settings, built_without: frozenset[str] = frozenset()) -> str:
    """The edge's nginx.conf for ``settings``; ``built_without`` names modules (``"uwsgi"``)
    this nginx was built without, whose temp-path directive it would refuse."""
    d = home(settings)
    other = "".join(
        f"    {m}_temp_path {d}/temp/{m};\n" for m in _OPTIONAL_TEMP_PATHS if m not in built_without
    )
    return _Conf((HERE / "conf" / "nginx.conf").read_text()).substitute(
        DIR=d,
        EDGE_PORT=settings.edge_port,
        GATE_PORT=settings.gate_port,
        SERVE_HOST=settings.serve_host,
        SERVE_PORT=settings.serve_port,
        GATE_MAX_INFLIGHT=settings.gate_max_inflight,
        # Ray's proxy ends a request at serve_request_timeout_s and answers 408/504 itself; the
        # gate waits a little longer so that answer, not nginx's own 504, reaches the caller.
        GATE_READ_TIMEOUT_S=int(settings.serve_request_timeout_s) + 2,
        MAX_BODY_BYTES=settings.max_body_bytes,
        UPLOAD_MAX_BYTES=settings.upload_max_bytes,
        UPLOAD_MAX_INFLIGHT=settings.upload_max_inflight,
        UPLOAD_PER_MIN=settings.upload_gate_per_min,
        ORIGIN_PORT=settings.origin_port,
        CACHE_MB=settings.edge_cache_mb,
        OTHER_TEMP_PATHS=other,
        USER=_worker_user(),
    )


def _worker_user() -> str:
    """nginx's ``user`` line. A master started as root hands its workers to ``nobody``, who
    cannot enter a stack folder under a private (mode 700) directory, such as a fresh clone in
    ``mktemp -d``: the cache then fails with "Permission denied". The workers keep the stack's
    owner instead (the edge listens on 127.0.0.1 only). Any other user cannot switch anyway."""
    if os.geteuid() != 0:
        return ""
    return f"user {pwd.getpwuid(os.geteuid()).pw_name};"


def _built_without(binary: str) -> frozenset[str]:
    done = subprocess.run([binary, "-V"], capture_output=True, text=True, timeout=10, check=False)
    flags = done.stdout + done.stderr  # nginx -V writes to stderr
    return frozenset(m for m in _OPTIONAL_TEMP_PATHS if f"--without-http_{m}_module" in flags)


def configure(settings: Settings, binary: str) -> Path:
    """Write the config under the edge's folder and check it with ``nginx -t``.

    The cache is emptied: a local edge starts cold, so that a regenerated world (same post ids,
    other sizes) is never served from the last run's objects and runs start alike.
    """
    d = home(settings)
    shutil.rmtree(d / "cache", ignore_errors=True)
    for sub in ("temp", "cache"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    conf = d / "nginx.conf"
    conf.write_text(render(settings, _built_without(binary)))
    done = subprocess.run(
        [binary, "-t", "-q", "-p", f"{d}/", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if done.returncode != 0:
        raise proc.StackError(f"nginx refused {conf}:\n{(done.stderr or done.stdout).strip()}")
    return conf


def up(settings: Settings) -> str:
    if proc.read_pid(settings.stack_dir, name(settings)) is not None:
        return "already running"
    if answers(settings):
        return f"reusing the edge already on port {settings.edge_port}"
    binary = ensure_installed()
    conf = configure(settings, binary)
    pid = proc.launch(
        settings.stack_dir,
        name(settings),
        [binary, "-p", f"{home(settings)}/", "-c", str(conf)],
        answers=lambda: answers(settings),
        what="nginx edge",
        log=home(settings) / "error.log",
    )
    return (
        f"started (pid {pid}) at {url(settings)}, cache {settings.edge_cache_mb} MB; "
        f"API gate at {settings.gate_url} (≤ {settings.gate_max_inflight} in flight)"
    )


def down(settings: Settings) -> bool:
    stopped = proc.stop(settings.stack_dir, name(settings), grace_s=10)
    if stopped:  # the next start empties them anyway; a test edge's must not pile up
        for disposable in ("cache", "temp"):
            shutil.rmtree(home(settings) / disposable, ignore_errors=True)
    return stopped
