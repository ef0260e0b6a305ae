"""The MLflow tracking server: sqlite backend, artifacts served through the server.

Artifacts are proxied (``--serve-artifacts``) so that a Ray worker on another node fetches a
model over HTTP instead of reading this machine's disk.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx

from core.settings import REPO_ROOT, Settings
from stack import proc

NAME = "mlflow"


def answers(settings: Settings) -> bool:
    if not settings.mlflow_tracking_uri.startswith("http"):
        return True
    try:
        return httpx.get(f"{settings.mlflow_tracking_uri}/health", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def argv(settings: Settings) -> list[str]:
    """The tracking server's command line: loopback only, sqlite, artifacts under the stack."""
    data = settings.stack_dir / "mlflow"
    (data / "artifacts").mkdir(parents=True, exist_ok=True)
    return [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(settings.mlflow_port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{data / 'mlflow.db'}",
        "--serve-artifacts",
        "--artifacts-destination",
        str(data / "artifacts"),
    ]


def up(settings: Settings) -> str:
    if not settings.mlflow_tracking_uri.startswith("http"):
        return f"not needed (tracking URI {settings.mlflow_tracking_uri})"
    if proc.read_pid(settings.stack_dir, NAME) is not None:
        return "already running"
    if answers(settings):
        return f"reusing the server at {settings.mlflow_tracking_uri}"
    env = {"MLFLOW_CONFIGURE_LOGGING": "false"}
    pid = proc.start(settings.stack_dir, NAME, argv(settings), env=env, cwd=REPO_ROOT / "mlflow")
    proc.wait_until(
        lambda: answers(settings),
        timeout_s=120,
        what="MLflow server",
        log=settings.stack_dir / "logs" / f"{NAME}.log",
        alive=lambda: proc.read_pid(settings.stack_dir, NAME) == pid,
    )
    return f"started (pid {pid}) at {settings.mlflow_tracking_uri}"


def down(settings: Settings) -> bool:
    return proc.stop(settings.stack_dir, NAME)


def main() -> None:  # pragma: no cover — mlflow/start.sh: the server in the foreground
    cmd = argv(Settings())
    os.execv(cmd[0], cmd)


if __name__ == "__main__":  # pragma: no cover
    main()
