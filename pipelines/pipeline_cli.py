"""``feedcast pipeline``: the scheduled retraining pipeline, run once or on a cron schedule."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from pipelines.cli_common import require_mlflow, settings

pipeline_app = typer.Typer(
    help="Retraining: export → validate → features → train (Ray Train) → evaluate against "
    "@champion → gate → register @challenger → promote. Serving picks up a new champion live.",
    no_args_is_help=True,
)
run_app = typer.Typer(help="Run a pipeline once.", no_args_is_help=True)
pipeline_app.add_typer(run_app, name="run")
console = Console()


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code=2)


@run_app.command("retrain")
def run_retrain_cmd(
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            help="Ray cluster to train on (ray://host:10001 or host:port); default: "
            "FEEDCAST_RAY_ADDRESS, else a local Ray started for the run.",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, max=64, help="Ray Train workers per ranker (FEEDCAST_TRAIN_WORKERS)."),
    ] = None,
    epochs: Annotated[int, typer.Option(min=1, max=200, help="Heavy ranker epochs (max).")] = 8,
    until: Annotated[
        str | None,
        typer.Option(help="Stop after this step; the next run resumes from there."),
    ] = None,
    new: Annotated[
        bool, typer.Option("--new", help="Abandon an unfinished run instead of resuming it.")
    ] = False,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the run's summary here.")
    ] = None,
) -> None:
    """Retrain once: resumes an unfinished run (after a crash), else starts a new one.

    Exit status: 0 when the run promoted, kept the champion (gate) or found nothing new; 2 when
    another run holds the lock, the data failed validation, or a step failed (resumable).
    """
    from pipelines.lock import LockHeld, LockUnavailable  # lazy: the redis client, ~0.1 s
    from pipelines.retrain import STEPS, RetrainOptions, run_retrain  # lazy: lightgbm, ~0.7 s

    s = settings()
    require_mlflow(s)
    try:
        options = RetrainOptions(
            ray_address=ray_address or s.ray_address,
            workers=workers or s.train_workers,
            epochs=epochs,
            until=until,
            new=new,
            progress=True,
        )
    except ValueError as exc:
        _fail(str(exc))
    try:
        summary = run_retrain(s, options)
    except (LockHeld, LockUnavailable) as exc:
        _fail(str(exc))
    except FileNotFoundError as exc:
        _fail(str(exc))
    table = Table("step", "seconds", "result", title=f"retrain {summary.run_id}")
    state = json.loads((Path(summary.folder) / "state.json").read_text())
    for step in STEPS:
        done = state["steps"].get(step)
        table.add_row(
            step,
            f"{done['seconds']:.1f}" if done else "-",
            json.dumps(done["out"], default=str)[:90] if done else "",
        )
    console.print(table)
    colour = {"promoted": "green", "refused": "yellow", "nothing-new": "yellow"}.get(
        summary.status, "red"
    )
    console.print(f"[bold {colour}]{summary.status}[/]: {summary.message}")
    if summary.resumed:
        console.print("(resumed an unfinished run)")
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(asdict(summary), indent=2, default=str))
    if summary.status == "stopped":
        raise typer.Exit(code=2)


@pipeline_app.command("runs")
def runs_cmd(
    last: Annotated[int, typer.Option(min=1, help="How many of the latest runs.")] = 10,
) -> None:
    """The latest retrain runs: status, data window and the steps they finished."""
    from pipelines.retrain import STEPS, Run  # lazy: lightgbm, ~0.7 s

    table = Table("run", "status", "window", "steps done", "message")
    for run in Run.all(settings())[-last:]:
        e = run.state["steps"].get("export", {}).get("out", {})
        window = f"{e.get('window_start', '')[:16]} → {e.get('window_end', '')[:16]}" if e else ""
        done = sum(run.done(s) for s in STEPS)
        table.add_row(
            run.id,
            run.state["status"],
            window,
            f"{done}/{len(STEPS)}",
            run.state.get("message", ""),
        )
    console.print(table)


@pipeline_app.command("schedule")
def schedule_cmd(
    cron: Annotated[
        str | None,
        typer.Option(
            help="Crontab expression (UTC; 6 fields = seconds first). Default: "
            "FEEDCAST_RETRAIN_CRON."
        ),
    ] = None,
) -> None:
    """Run `pipeline run retrain` on a cron schedule (APScheduler, job store persisted in
    SQLite under the feedcast home) until interrupted. A run still going when the next is due
    is not doubled; missed runs collapse into one."""
    # lazy: APScheduler's SQLAlchemy job store and the redis client, ~0.2 s
    from pipelines.schedule import build_scheduler, next_fire_times

    s = settings()
    expr = cron or s.retrain_cron
    try:
        fires = next_fire_times(expr, 3)
        sched = build_scheduler(s, cron=expr, blocking=True)
    except ValueError as exc:
        _fail(str(exc))
    console.print(
        f"retrain on [bold]{expr}[/] (UTC); next: "
        + ", ".join(f"{t:%Y-%m-%d %H:%M:%S}" for t in fires)
    )
    try:
        sched.start()
    except (KeyboardInterrupt, SystemExit):
        console.print("schedule stopped")
