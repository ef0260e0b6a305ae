"""What every ``feedcast`` sub-command shares: the console, failing in one line, the settings.

The sub-apps (``forecast_cli``, ``pipeline_cli``, ``prefetch_cli``) and ``cli`` import this
module; it imports none of them.
"""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console

from core.settings import Settings
from stack.mlflow_server import answers

console = Console()


def fail(message: str) -> NoReturn:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code=2)


def require_mlflow(s: Settings) -> None:
    """Fail in one line, before any work, when the tracking server is not there."""
    if not answers(s):
        fail(
            f"MLflow at {s.mlflow_tracking_uri} is not answering: start the stack with "
            "`feedcast stack up` (or set FEEDCAST_MLFLOW_TRACKING_URI=sqlite:///path/mlflow.db)"
        )


def settings() -> Settings:
    try:
        return Settings()
    except Exception as exc:  # pydantic's message names the variable and the problem
        fail(f"invalid FEEDCAST_* configuration: {exc}")
