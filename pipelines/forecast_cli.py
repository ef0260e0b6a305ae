"""``feedcast forecast ...``: backtest the traffic forecaster (and ``feedcast capacity ...``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from pipelines.render import figures_table
from simulator.traffic import VARIANTS

forecast_app = typer.Typer(
    help="Traffic forecasts (requests, uploads, bytes) for capacity planning.",
    no_args_is_help=True,
)
console = Console()


def _variants(value: list[str] | None) -> list[str]:
    chosen = value or list(VARIANTS)
    bad = [v for v in chosen if v not in VARIANTS]
    if bad:
        raise typer.BadParameter(
            f"unknown variant {', '.join(bad)} (choose from {', '.join(VARIANTS)})",
            param_hint="--variants",
        )
    return chosen


@forecast_app.command("backtest")
def backtest_cmd(
    json_out: Annotated[
        Path,
        typer.Option("--json", help="Where to write the figures (JSON); the plot goes beside."),
    ] = Path("bench/results/forecast.json"),
    variants: Annotated[
        list[str] | None,
        typer.Option(help=f"Series variants (repeat the option); default all: {list(VARIANTS)}."),
    ] = None,
    folds: Annotated[int, typer.Option(min=2, max=52, help="Rolling origins, 192 h apart.")] = 8,
    weeks: Annotated[int, typer.Option(min=10, max=260, help="Length of each series.")] = 26,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the series.")] = 0,
    arima_folds: Annotated[
        int, typer.Option(min=0, help="Folds per variant AutoARIMA runs on (≈20 s a fit).")
    ] = 2,
    baselines: Annotated[
        bool, typer.Option(help="Run the statsforecast baselines (AutoETS, AutoARIMA, MSTL).")
    ] = True,
) -> None:
    """Rolling-origin backtest (refit per fold, horizons 24 h and 168 h) of our LightGBM quantile
    forecaster vs seasonal naive, statsforecast and the true rate; write JSON and a PNG."""
    from training.forecast_backtest import backtest, origins_for
    from training.forecast_report import plot

    chosen = _variants(variants)
    try:
        origins_for(weeks * 168, folds)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--folds") from exc
    out, all_folds = backtest(
        chosen,  # type: ignore[arg-type]  # checked against VARIANTS above
        folds=folds,
        weeks=weeks,
        seed=seed,
        baselines=baselines,
        arima_folds=arima_folds,
    )
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(out, indent=2))
    png = plot(all_folds, json_out.with_suffix(".png"))
    figures: dict[str, object] = {k: v for k, v in out.items() if isinstance(v, float)}
    figures["best_statsforecast"] = out.get("best_statsforecast", "-")
    title = f"{folds} folds, 168 h ahead, MASE (season 168) — wall {out['wall_s']} s"
    table = figures_table(title, figures)
    for bar, ok in out["bars"].items():
        table.add_row(bar, "[green]holds[/]" if ok else "[red]fails[/]")
    console.print(table)
    console.print(f"wrote {json_out} and {png}")


capacity_app = typer.Typer(
    help="Capacity plans from the traffic forecasts: feed replicas, upload workers, storage.",
    no_args_is_help=True,
)


@capacity_app.command("plan")
def capacity_plan_cmd(
    variants: Annotated[
        list[str] | None,
        typer.Option(help=f"Series variants (repeat the option); default all: {list(VARIANTS)}."),
    ] = None,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the series.")] = 0,
    weeks: Annotated[int, typer.Option(min=6, max=260, help="Length of each series.")] = 16,
    folds: Annotated[int, typer.Option(min=1, max=8, help="Weeks planned and judged.")] = 3,
    replica_rps: Annotated[
        float, typer.Option(min=0.1, help="Requests/s one feed replica serves at its target.")
    ] = 20.0,
    plan_quantile: Annotated[
        float,
        typer.Option(min=0.5, max=0.99, help="Forecast quantile the replica floor is sized at."),
    ] = 0.5,
    json_out: Annotated[
        Path, typer.Option("--json", help="Figures (JSON); the plot and schedule go beside.")
    ] = Path("bench/results/capacity.json"),
) -> None:
    """Fit the forecaster on each series, plan the coming week (replica bounds per hour, upload
    workers, days until storage is full) and judge the plan minute by minute against a reactive
    autoscaler (70% target, same lag) and perfect foresight."""
    import yaml

    from prefetch import capacity as cp

    chosen = _variants(variants)
    cfg = cp.CapacityConfig(replica_rps=replica_rps, plan_quantile=plan_quantile)
    results: dict[str, object] = {}
    table = Table(title=f"capacity plans, {folds} planned weeks per variant")
    for col in ("variant", "under-prov min", "replica-h ÷ perfect", "reactive under", "reactive ÷"):
        table.add_column(col, justify="right")
    json_out.parent.mkdir(parents=True, exist_ok=True)
    with console.status("planning") as status:
        for v in chosen:
            out = cp.evaluate(
                v, seed=seed, weeks=weeks, folds=folds, cfg=cfg, progress=status.update
            )
            stem = json_out.with_suffix("")
            cp.plot(out, Path(f"{stem}_{v}.png"), cfg)
            plan = out.pop("last")["plan"]
            Path(f"{stem}_{v}_schedule.yaml").write_text(yaml.safe_dump(plan.to_dict()))
            out["days_until_full_p95"] = plan.days_until_full
            results[v] = out
            table.add_row(
                v,
                f"{out['underprov_minutes_frac']:.2%}",
                f"{out['replica_hours_over_perfect']:.3f}",
                f"{out['reactive_underprov_minutes_frac']:.2%}",
                f"{out['reactive_replica_hours_over_perfect']:.3f}",
            )
    worst = {
        k: max(float(r[k]) for r in results.values())  # type: ignore[index]
        for k in (
            "underprov_minutes_frac",
            "replica_hours_over_perfect",
            "reactive_underprov_minutes_frac",
            "reactive_replica_hours_over_perfect",
        )
    }
    json_out.write_text(json.dumps({**worst, "variants": results}, indent=2, default=str))
    console.print(table)
    console.print(f"wrote {json_out}, plots and schedules beside it")
