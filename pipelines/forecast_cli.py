"""``feedcast forecast ...``: backtest the traffic forecaster (and ``feedcast capacity ...``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import typer
import yaml
from rich.console import Console
from rich.table import Table

from capacity import plan as cp
from capacity.anomaly import band_rows
from pipelines.cli_common import settings
from pipelines.render import figures_table
from simulator.traffic import VARIANTS, from_lake

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
    from training.forecast_backtest import backtest, origins_for  # lazy: lightgbm, scipy: ~0.7 s
    from training.forecast_report import plot  # lazy: lightgbm, scipy: ~0.7 s

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
        typer.Option(
            min=0.5, max=0.99, help="Forecast quantile taken as the expected rate of the plan."
        ),
    ] = 0.5,
    json_out: Annotated[
        Path, typer.Option("--json", help="Figures (JSON); the plot and schedule go beside.")
    ] = Path("bench/results/capacity.json"),
) -> None:
    """Backtest the capacity planner on simulated series: fit the forecaster on each, plan the
    coming week (expected rate and replica bounds per hour, upload workers, days until storage
    is full) and judge the plan minute by minute against a reactive autoscaler (70% target, same
    lag), the same autoscaler at our target without the forecast, and perfect foresight, at
    reaction lags of 5, 15 and 30 minutes. For the live deployment: `capacity schedule`."""

    from capacity import backtest  # lazy: lightgbm, scipy: ~0.7 s

    chosen = _variants(variants)
    if weeks - folds < 3:  # the forecaster's least history (2 weeks + 5 training origins)
        raise typer.BadParameter(
            f"{weeks} weeks leave {weeks - folds} before the first of {folds} planned weeks; "
            "the forecaster needs 3",
            param_hint="--weeks",
        )
    cfg = cp.CapacityConfig(replica_rps=replica_rps, plan_quantile=plan_quantile)
    results: dict[str, dict[str, Any]] = {}
    table = Table(title=f"capacity plans, {folds} planned weeks per variant, {cfg.lag_min} min lag")
    for col in (
        "variant",
        "ours: under-prov min",
        "ours: replica-h ÷ perfect",
        "reactive 70%: under",
        "reactive 70%: ÷",
        f"reactive {cfg.inbound_target:.0%}: under",
        f"reactive {cfg.inbound_target:.0%}: ÷",
    ):
        table.add_column(col, justify="right")
    json_out.parent.mkdir(parents=True, exist_ok=True)
    with console.status("planning") as status:
        for v in chosen:
            out = backtest.evaluate_and_write(
                v,
                json_out.with_suffix(""),
                cfg,
                seed=seed,
                weeks=weeks,
                folds=folds,
                progress=status.update,
            )
            results[v] = out
            table.add_row(v, *_capacity_cells(out))
    summary = backtest.worst(results)
    for lag, row in summary["by_lag"].items():
        table.add_row(f"worst, {lag} min lag", *_capacity_cells(row))
    json_out.write_text(json.dumps({**summary, "variants": results}, indent=2, default=str))
    console.print(table)
    console.print(f"wrote {json_out}, plots and schedules beside it")


SERIES = ("requests", "uploads", "upload_bytes")


def _capacity_cells(row: dict[str, float]) -> list[str]:
    from capacity.backtest import SUMMARY_KEYS  # lazy: lightgbm, scipy: ~0.7 s

    return [f"{row[k]:.2%}" if "underprov" in k else f"{row[k]:.3f}" for k in SUMMARY_KEYS]


def _history(path: Path | None) -> pd.DataFrame:
    """Hourly counts indexed by UTC hour: from a Parquet/CSV file, or from the lake's logs."""
    if path is None:
        lake = settings().world_dir
        try:
            counted = from_lake(lake)
        except (OSError, ValueError) as exc:
            raise typer.BadParameter(
                f"no logs to count in {lake} ({exc}); give --history", param_hint="--history"
            ) from exc
        return counted.iloc[:-1]  # the latest hour may still be filling
    try:
        raw = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc}", param_hint="--history") from exc
    missing = [c for c in ("ds", *SERIES) if c not in raw.columns]
    if missing:
        raise typer.BadParameter(
            f"{path} lacks column(s) {', '.join(missing)} (needs ds, {', '.join(SERIES)})",
            param_hint="--history",
        )
    counts = raw[list(SERIES)].apply(pd.to_numeric, errors="coerce")
    bad = counts.columns[(counts.isna() | (counts < 0)).any()].tolist()
    if bad:
        raise typer.BadParameter(
            f"{path}: {', '.join(bad)} must be counts ≥ 0 in every hour (found blanks, text or "
            "negatives)",
            param_hint="--history",
        )
    try:
        hours = pd.to_datetime(raw["ds"], utc=True)
    except (ValueError, TypeError) as exc:
        raise typer.BadParameter(
            f"{path}: ds is not a time ({exc})", param_hint="--history"
        ) from exc
    frame = counts.set_index(hours).rename_axis("ds").sort_index()
    step = frame.index.to_series().diff().dropna()
    if frame.index.has_duplicates or (len(step) and (step != pd.Timedelta(hours=1)).any()):
        raise typer.BadParameter(
            f"{path}: ds must be consecutive whole hours, without gaps or repeats",
            param_hint="--history",
        )
    return frame


@capacity_app.command("schedule")
def capacity_schedule_cmd(
    out: Annotated[Path, typer.Option("--out", help="Where to write the plan (YAML).")] = Path(
        "capacity_plan.yaml"
    ),
    history: Annotated[
        Path | None,
        typer.Option(
            help="Hourly counts (Parquet or CSV) with columns ds (UTC hour), requests, uploads, "
            "upload_bytes. Default: counted from the lake's logs (impressions, posts)."
        ),
    ] = None,
    replica_rps: Annotated[
        float, typer.Option(min=0.1, help="Requests/s one feed replica serves at its target.")
    ] = 20.0,
    stored_bytes: Annotated[
        float, typer.Option(min=0, help="Bytes the media store holds now.")
    ] = 0.0,
    storage_capacity_bytes: Annotated[
        float, typer.Option(min=1, help="Bytes the media store can hold.")
    ] = 1e15,
) -> None:
    """Plan the week after the history for the live deployment: fit the forecaster on the
    history, forecast the next 168 hours and write the replica plan (expected rate, min and
    max replicas per hour), upload workers per hour, days until storage is full, and the
    forecast's 95% band per hour for the request and upload rates (what monitoring judges the
    live rates against). Serve with it: FEEDCAST_SERVE_CAPACITY_PLAN=OUT feedcast serve start."""
    from training.forecast import Forecaster, ForecastParams  # lazy: lightgbm, scipy: ~0.7 s

    frame = _history(history)
    params = ForecastParams(quantiles=(0.1, 0.5, 0.9, 0.95))
    needed = params.min_history
    if len(frame) < needed:
        raise typer.BadParameter(
            f"{len(frame)} hours of history; the forecaster needs at least {needed}",
            param_hint="--history",
        )
    cfg = cp.CapacityConfig(replica_rps=replica_rps, storage_capacity_bytes=storage_capacity_bytes)
    index = pd.DatetimeIndex(frame.index)
    origin = len(frame) - 1
    forecasts = {}
    with console.status("fitting") as status:
        for name in SERIES:
            status.update(f"fitting the {name} forecaster on {len(frame)} hours")
            y = frame[name].to_numpy(np.float64)
            model = Forecaster.fit(y, index, params)
            forecasts[name] = model.predict(y, index, origin)
    hours = forecasts["requests"].index
    uploads = forecasts["uploads"][0.5].to_numpy()
    growth = forecasts["upload_bytes"][0.95].to_numpy()
    plan = cp.CapacityPlan(
        hours=[t.isoformat() for t in hours],
        expected_rps=(forecasts["requests"][cfg.plan_quantile].to_numpy() / 3600.0).tolist(),
        upload_workers=cp.upload_workers(uploads, cfg).tolist(),
        days_until_full=cp.days_until_full(stored_bytes, growth, storage_capacity_bytes),
        config=cfg,
        expected_uploads=uploads.tolist(),
        bytes_per_post=cp.stored_bytes_per_post(uploads, growth),
        forecast_band=band_rows(
            [t.isoformat() for t in hours],
            {
                name: {q: forecasts[name][q].to_numpy() for q in (0.1, 0.5, 0.9)}
                for name in ("requests", "uploads")
            },
        ),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(plan.to_dict()))
    rows = plan.autoscaling_bounds()
    console.print(
        f"{hours[0]:%Y-%m-%d %H:%M} → {hours[-1]:%Y-%m-%d %H:%M} UTC: replicas "
        f"{min(r['min_replicas'] for r in rows)}–{max(r['max_replicas'] for r in rows)}, "
        f"peak {max(r['expected_rps'] for r in rows):.1f} req/s, storage full in "
        f"{plan.days_until_full:.0f} days at p95 growth"
    )
    console.print(f"wrote {out}  (serve with it: FEEDCAST_SERVE_CAPACITY_PLAN={out})")
