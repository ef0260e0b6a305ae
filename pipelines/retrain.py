"""The retraining pipeline: export → validate → commit → features → training set → validate →
train (Ray Train) → forecaster → evaluate against @champion → gate → register @challenger →
promote to @champion. Serving replicas poll the alias and swap the pair live.

A run is a folder under ``settings.pipeline_dir/runs/<run id>``: every step reads what earlier
steps left there *by path* and records itself in ``state.json`` (written atomically) when done.
So a run killed at any point is finished by the next ``feedcast pipeline run retrain``: it
resumes the unfinished run, skips the steps already done, and reuses the same MLflow run — a model
version registered before the crash is found by that run id and not registered again.

Two runs never overlap: the whole run holds a Redis lock (:mod:`pipelines.lock`) that it renews
while it works; a second run is refused with the holder's name.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core import constants as C
from core.settings import REPO_ROOT, Settings
from pipelines.validate import ValidationError

log = logging.getLogger("feedcast.pipelines.retrain")

STEPS = (
    "export",
    "validate_export",
    "commit",
    "features",
    "training_set",
    "validate",
    "train",
    "forecaster",
    "evaluate",
    "gate",
    "register",
    "promote",
)
TERMINAL = ("promoted", "refused", "stopped", "nothing-new")
FAILPOINT_ENV = "FEEDCAST_FAILPOINT"


def failpoint(name: str) -> None:
    """Die here, as a SIGKILL would, when ``FEEDCAST_FAILPOINT`` names this point (crash tests)."""
    if os.environ.get(FAILPOINT_ENV) == name:
        log.warning("failpoint %s: killing the run", name)
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class RetrainOptions:
    ray_address: str | None = None
    workers: int = 1
    epochs: int = 8
    until: str | None = None  # stop after this step (the run stays resumable)
    upto: datetime | None = None  # export up to here (default: now − label delay)
    new: bool = False  # never resume: abandon an unfinished run and start a fresh one
    progress: bool = False

    def __post_init__(self) -> None:
        if self.until is not None and self.until not in STEPS:
            raise ValueError(f"unknown step {self.until!r}; the steps are {', '.join(STEPS)}")


@dataclass
class RetrainSummary:
    run_id: str
    status: str
    message: str
    folder: str
    window: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    resumed: bool = False


class Run:
    """One run's folder and its ``state.json``."""

    def __init__(self, folder: Path, state: dict[str, Any]) -> None:
        self.folder, self.state = folder, state

    @property
    def id(self) -> str:
        return str(self.state["run_id"])

    @classmethod
    def new(cls, settings: Settings) -> Run:
        now = datetime.now(UTC)
        run_id = f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"
        run = cls(
            settings.pipeline_dir / "runs" / run_id,
            {"run_id": run_id, "created": now.isoformat(), "status": "running", "steps": {}},
        )
        run.folder.mkdir(parents=True)
        run.save()
        return run

    @classmethod
    def all(cls, settings: Settings) -> list[Run]:
        runs = []
        for f in sorted((settings.pipeline_dir / "runs").glob("*/state.json")):
            runs.append(cls(f.parent, json.loads(f.read_text())))
        return runs

    def save(self) -> None:
        tmp = self.folder / ".state.json.tmp"
        tmp.write_text(json.dumps(self.state, indent=2, default=str))
        tmp.replace(self.folder / "state.json")  # atomic: a crash never leaves half a state

    def done(self, step: str) -> bool:
        return step in self.state["steps"]

    def out(self, step: str) -> dict[str, Any]:
        return dict(self.state["steps"][step]["out"])

    def mark(self, step: str, out: dict[str, Any], seconds: float) -> None:
        self.state["steps"][step] = {
            "at": datetime.now(UTC).isoformat(),
            "seconds": round(seconds, 2),
            "out": out,
        }
        self.save()

    def finish(self, status: str, message: str) -> None:
        self.state.update(status=status, message=message, ended=datetime.now(UTC).isoformat())
        self.save()


def code_version() -> str:
    """The git commit of the code that ran (``-dirty`` with local changes), else the package's."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import version

        return f"feedcast {version('feedcast')}"


class Context:
    """What the steps share: settings, options, the run, and the open MLflow run."""

    def __init__(self, settings: Settings, options: RetrainOptions, run: Run) -> None:
        self.settings, self.options, self.run = settings, options, run
        self.metrics: dict[str, float] = {}

    def path(self, name: str) -> Path:
        return self.run.folder / name

    def window(self) -> tuple[pd.Timestamp, pd.Timestamp]:
        w = self.run.out("export")
        return pd.Timestamp(w["window_start"]), pd.Timestamp(w["window_end"])

    def log_metrics(self, metrics: dict[str, float]) -> None:
        import mlflow

        finite = {k: float(v) for k, v in metrics.items() if np.isfinite(v)}
        self.metrics.update(finite)
        if finite:
            mlflow.log_metrics(finite)


class NothingNew(RuntimeError):
    """The export found no new impressions: nothing to retrain on."""


class Refused(RuntimeError):
    """The gate kept the champion."""


# -- the steps ------------------------------------------------------------------------------------


def sim_clock(ctx: Context) -> datetime | None:
    """In a world that holds days back, *now* is how far `world advance` has served it: the
    export stops there (less the label delay), not at the wall clock, or the days not yet served
    would count as an outage. None for a world that holds nothing back."""
    from simulator.writer import CURSOR_FILE, FUTURE_DIR

    cursor_file = ctx.settings.world_dir / FUTURE_DIR / CURSOR_FILE
    if not cursor_file.exists():
        return None
    # Only the cursor: the held-back log itself is not needed here.
    cursor = datetime.fromisoformat(json.loads(cursor_file.read_text())["advanced_to"])
    return min(cursor, datetime.now(UTC)) - pd.Timedelta(seconds=ctx.settings.label_delay_s)


def step_export(ctx: Context) -> dict[str, Any]:
    from pipelines.export import export_log

    res = export_log(ctx.settings, ctx.path("export"), upto=ctx.options.upto or sim_clock(ctx))
    out = {
        "window_start": pd.Timestamp(res.window_start).isoformat(),
        "window_end": pd.Timestamp(res.window_end).isoformat(),
        "rows": dict(res.rows),
    }
    import mlflow

    mlflow.set_tags(
        {"data_window_start": out["window_start"], "data_window_end": out["window_end"]}
    )
    ctx.log_metrics({f"export_{k}": v for k, v in res.rows.items()})
    return out


def _previous(ctx: Context, step: str) -> dict[str, Any] | None:
    """What ``step`` recorded in the latest earlier run that got past it."""
    for run in reversed(Run.all(ctx.settings)):
        if run.id < ctx.run.id and run.done(step):
            return run.out(step)
    return None


def step_validate_export(ctx: Context) -> dict[str, Any]:
    from pipelines.validate import check_export, expected_rows

    new = pd.read_parquet(ctx.path("export") / "impressions.parquet")
    start, end = ctx.window()
    if new.empty:
        raise NothingNew(f"no new impressions between {start} and {end}")
    lake = pd.read_parquet(ctx.settings.world_dir / "impressions.parquet")
    report = check_export(
        new,
        lake,
        (start, end),
        expected_rows(lake[C.EVENT_TS], start, end),
        min_rows_ratio=ctx.settings.min_rows_ratio,
    )
    ctx.log_metrics({f"validate_export_{k}": v for k, v in report.stats.items()})
    report.raise_if_failed(f"the export of {start} – {end}")
    return report.stats


def step_commit(ctx: Context) -> dict[str, Any]:
    from pipelines.export import commit_export

    return {k: int(v) for k, v in commit_export(ctx.settings, ctx.path("export")).items()}


def step_features(ctx: Context) -> dict[str, Any]:
    """Feature tables from the lake, `feast apply`, then materialize the new rows into Redis.

    Feast's ``materialize_incremental`` starts from the end of the last materialization; the
    rows of this export can be older than that (late-arriving days), so the window materialized
    starts at the export's own start. Redis keeps the newest row per key, so rows materialized
    twice change nothing.
    """
    from features import popular
    from features.store import apply, open_store

    counts = apply(ctx.settings)
    start, _ = ctx.window()
    end = datetime.now(UTC)
    open_store(ctx.settings).materialize(
        start_date=(start - pd.Timedelta(hours=2)).to_pydatetime(), end_date=end
    )
    n_popular = popular.publish(ctx.settings, end)
    return {"tables": counts, "popular": n_popular, "materialized_to": end.isoformat()}


def step_training_set(ctx: Context) -> dict[str, Any]:
    from training.dataset import training_frame

    frame = training_frame(ctx.settings)
    tmp = ctx.path(".training_set.parquet")
    frame.to_parquet(tmp, index=False)
    tmp.replace(ctx.path("training_set.parquet"))
    return {"rows": len(frame)}


def step_validate(ctx: Context) -> dict[str, Any]:
    from pipelines.validate import check_training_set
    from training.dataset import MODEL_FEATURES

    frame = pd.read_parquet(ctx.path("training_set.parquet"))
    import pyarrow.parquet as pq

    # The row count from the file's footer: no column needs reading.
    lake_rows = pq.ParquetFile(ctx.settings.world_dir / "impressions.parquet").metadata.num_rows
    start, _ = ctx.window()
    report = check_training_set(
        frame,
        expected_rows=lake_rows,
        features=MODEL_FEATURES,
        previous=_previous(ctx, "validate"),
        recent=(frame[C.EVENT_TS] >= start).to_numpy(),
    )
    ctx.log_metrics({f"validate_{k}": v for k, v in report.stats.items()})
    report.raise_if_failed("the training set")
    return report.stats


def step_train(ctx: Context) -> dict[str, Any]:
    """Both rankers through Ray Train on the rows before the export window (the holdout is the
    window itself: data the champion never saw either)."""
    from training.distributed import train_heavy_ray, train_light_ray
    from training.heavy import HeavyParams
    from training.light import LightParams

    frame = pd.read_parquet(ctx.path("training_set.parquet"))
    start, _ = ctx.window()
    train, holdout = frame[frame[C.EVENT_TS] < start], frame[frame[C.EVENT_TS] >= start]
    if train.empty or holdout.empty:
        raise ValidationError(
            f"{len(train)} rows before {start} and {len(holdout)} after: nothing to train or judge"
        )
    train.to_parquet(ctx.path("train.parquet"), index=False)
    holdout.to_parquet(ctx.path("holdout.parquet"), index=False)
    kw: dict[str, Any] = {
        "address": ctx.options.ray_address,
        "workers": ctx.options.workers,
        "storage": ctx.path("ray"),
    }
    t0 = time.perf_counter()
    booster = train_light_ray(ctx.path("train.parquet"), LightParams(), **kw)
    booster.save_model(str(ctx.path("light.txt")))
    t1 = time.perf_counter()
    heavy = train_heavy_ray(
        ctx.path("train.parquet"),
        HeavyParams(epochs=ctx.options.epochs),
        progress=ctx.options.progress,
        **kw,
    )
    heavy.save(ctx.path("heavy"))
    t2 = time.perf_counter()
    ctx.log_metrics({"train_light_s": t1 - t0, "train_heavy_s": t2 - t1})
    return {"train_rows": len(train), "holdout_rows": len(holdout)}


def step_forecaster(ctx: Context) -> dict[str, Any]:
    """Refit the traffic forecaster on the lake's hourly requests, when there is history enough."""
    from simulator.traffic import from_lake
    from training.forecast import Forecaster, ForecastParams

    series = from_lake(ctx.settings.world_dir)
    params = ForecastParams()
    needed = params.min_history
    if len(series) < needed:
        return {
            "fitted": False,
            "reason": f"{len(series)} hours of request history; the forecaster needs {needed}",
        }
    y = series["requests"].to_numpy(np.float64)
    model = Forecaster.fit(y, pd.DatetimeIndex(series.index), params)
    model.save(ctx.path("forecaster"))
    series[["requests"]].rename(columns={"requests": "y"}).rename_axis(
        "ds"
    ).reset_index().to_parquet(ctx.path("forecast_history.parquet"), index=False)
    return {"fitted": True, "hours": len(series)}


def _scores(
    prefix: str, light_model: Any, heavy: Any, frame: pd.DataFrame, weights: dict[str, float]
) -> dict[str, Any]:
    """A model pair's scores of the holdout: heads at their logged slots (what AUC judges), the
    serving blend (what ranks a page) and the light ranker's score."""
    from training import light
    from training.heavy import blend

    pred = heavy.predict(frame, serving_like=False)
    out = {f"{prefix}_{h}": v for h, v in pred.items()}
    out[f"{prefix}_blend"] = blend(heavy.predict(frame, serving_like=True), weights)
    out[f"{prefix}_light"] = light_model.predict(light.features_matrix(frame, serving_like=True))
    return out


def step_evaluate(ctx: Context) -> dict[str, Any]:
    """Challenger and champion scored on the same holdout, written to ``scored.parquet``."""
    import lightgbm as lgb

    from serving.model import load_alias
    from training.heavy import HeavyModel

    holdout = pd.read_parquet(ctx.path("holdout.parquet"))
    light_model = lgb.Booster(model_file=str(ctx.path("light.txt")))
    heavy = HeavyModel.load(ctx.path("heavy"))
    cols = {
        C.REQUEST_ID: holdout[C.REQUEST_ID].to_numpy(),
        C.LABEL: holdout[C.LABEL].to_numpy(),
        **{k: holdout[k].to_numpy() for k in C.ENGAGEMENT_KINDS},
        **_scores("challenger", light_model, heavy, holdout, ctx.settings.blend_weights),
    }
    champion: str | None = None
    try:
        current = load_alias(ctx.settings, ctx.settings.model_alias)
    except Exception as exc:  # no alias yet (the first run), or an unreadable champion
        if "alias" not in str(exc).lower() and "not found" not in str(exc).lower():
            raise
        log.info("no champion to compare with: %s", exc)
    else:
        champion = current.label
        cols.update(
            _scores("champion", current.light, current.heavy, holdout, ctx.settings.blend_weights)
        )
    scored = pd.DataFrame(cols)
    scored.to_parquet(ctx.path("scored.parquet"), index=False)
    return {"champion": champion, "rows": len(scored)}


def step_gate(ctx: Context) -> dict[str, Any]:
    from pipelines.gate import decide

    scored = pd.read_parquet(ctx.path("scored.parquet"))
    champion = ctx.run.out("evaluate")["champion"]
    decision = decide(
        scored, tolerance=ctx.settings.gate_tolerance, has_champion=champion is not None
    )
    ctx.log_metrics(decision.metrics())
    return {
        "promote": decision.promote,
        "reason": decision.reason,
        "champion": champion,
        "checks": [asdict(c) for c in decision.checks],
    }


def _existing_version(client: Any, name: str, run_id: str) -> str | None:
    found = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    return str(max(int(v.version) for v in found)) if found else None


def step_register(ctx: Context) -> dict[str, Any]:
    """Register both rankers (and the forecaster) from this run as ``@challenger``, once: a
    version this MLflow run already registered (before a crash) is found, not made again."""
    import lightgbm as lgb

    from training import registry
    from training.forecast import Forecaster
    from training.forecast_registry import FORECAST_MODEL_NAME, log_forecaster
    from training.heavy import HeavyModel
    from training.light import features_matrix

    s = ctx.settings
    client = registry.configure(s)
    run_id = ctx.run.state["mlflow_run_id"]
    holdout = pd.read_parquet(ctx.path("holdout.parquet"))
    versions: dict[str, str] = {}
    if (v := _existing_version(client, s.model_name, run_id)) is None:
        booster = lgb.Booster(model_file=str(ctx.path("light.txt")))
        v = registry.log_light(
            booster, features_matrix(holdout.head(50), serving_like=True), s, None
        ).version
    versions[s.model_name] = v
    failpoint("register:light")
    if (v := _existing_version(client, s.heavy_model_name, run_id)) is None:
        heavy = HeavyModel.load(ctx.path("heavy"))
        cols = [*heavy.spec.dense, C.USER_ID, C.AUTHOR_ID, C.TOPIC, "hour_of_day"]
        v = registry.log_heavy(heavy, holdout[cols].head(50), s, None).version
    versions[s.heavy_model_name] = v
    if ctx.run.out("forecaster").get("fitted"):
        if (v := _existing_version(client, FORECAST_MODEL_NAME, run_id)) is None:
            v = log_forecaster(
                Forecaster.load(ctx.path("forecaster")),
                pd.read_parquet(ctx.path("forecast_history.parquet")),
                s,
                None,
            ).version
        versions[FORECAST_MODEL_NAME] = v
    for name, version in versions.items():
        client.set_registered_model_alias(name, "challenger", version)
    return {"versions": versions}


def step_promote(ctx: Context) -> dict[str, Any]:
    """Move ``@champion`` onto the challengers (each alias move is atomic; replicas swap the
    ranker pair once both aliases point at the same run)."""
    from training import registry

    gate = ctx.run.out("gate")
    versions = ctx.run.out("register")["versions"]
    if not gate["promote"]:
        raise Refused(f"kept @{ctx.settings.model_alias}: {gate['reason']}")
    client = registry.configure(ctx.settings)
    for name, version in versions.items():
        client.set_registered_model_alias(name, ctx.settings.model_alias, version)
    return {"promoted": versions}


STEP_FUNCTIONS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "export": step_export,
    "validate_export": step_validate_export,
    "commit": step_commit,
    "features": step_features,
    "training_set": step_training_set,
    "validate": step_validate,
    "train": step_train,
    "forecaster": step_forecaster,
    "evaluate": step_evaluate,
    "gate": step_gate,
    "register": step_register,
    "promote": step_promote,
}


# -- the flow -------------------------------------------------------------------------------------


def _pick_run(settings: Settings, options: RetrainOptions) -> tuple[Run, bool]:
    """The unfinished run to resume (a crash or an error left it), or a new one."""
    runs = [r for r in Run.all(settings) if r.state["status"] not in TERMINAL]
    if runs and not options.new:
        return runs[-1], True
    for r in runs:  # --new: the unfinished ones are abandoned, and say so
        r.finish("stopped", "abandoned: a later run was started with --new")
    return Run.new(settings), False


def _steps(ctx: Context, lock: Any) -> tuple[str, str]:
    """Run the steps not yet done; the run's status and a line saying why it ended there."""
    run, options, settings = ctx.run, ctx.options, ctx.settings
    try:
        for step in STEPS:
            lock.check()  # a run that lost its lock stops before the next step
            if run.done(step):
                continue
            log.info("run %s: %s", run.id, step)
            t0 = time.perf_counter()
            out = STEP_FUNCTIONS[step](ctx)
            run.mark(step, out, time.perf_counter() - t0)
            failpoint(f"after:{step}")
            if step == options.until:
                return "paused", f"stopped after {step} as asked (resumable)"
    except NothingNew as exc:
        return "nothing-new", str(exc)
    except Refused as exc:
        return "refused", str(exc)
    except ValidationError as exc:
        return "stopped", str(exc)
    promoted = run.out("promote")["promoted"]
    return "promoted", f"@{settings.model_alias} → " + ", ".join(
        f"{n}/{v}" for n, v in promoted.items()
    )


def run_retrain(settings: Settings, options: RetrainOptions | None = None) -> RetrainSummary:
    """One retrain under the run lock; resumes an unfinished run. Raises ``LockHeld`` when
    another run holds the lock and ``ValidationError`` when the data stops the run."""
    import mlflow

    from pipelines.lock import RunLock
    from training import registry

    options = options or RetrainOptions()
    owner = {"run_id": "retrain (resuming or starting)", "command": "pipeline run retrain"}
    with RunLock(settings, owner=owner) as lock:
        run, resumed = _pick_run(settings, options)
        ctx = Context(settings, options, run)
        registry.configure(settings)
        mlflow.set_experiment(settings.experiment)
        active = mlflow.start_run(
            run_id=run.state.get("mlflow_run_id"), run_name=f"retrain {run.id}"
        )
        mlflow_status = "FAILED"
        try:
            if "mlflow_run_id" not in run.state:
                run.state["mlflow_run_id"] = active.info.run_id
                run.save()
                mlflow.set_tags(
                    {
                        "pipeline": "retrain",
                        "pipeline_run_id": run.id,
                        "code_version": code_version(),
                    }
                )
                mlflow.log_params(
                    {k: v for k, v in asdict(options).items() if k != "progress"}
                    | {"gate_tolerance": settings.gate_tolerance}
                )
            status, message = _steps(ctx, lock)
            mlflow.set_tags({"status": status, "message": message[:5000]})
            if status == "paused":
                run.state["message"] = message
                run.save()
            else:
                run.finish(status, message)
            mlflow_status = "FAILED" if status == "stopped" else "FINISHED"
        except BaseException as exc:  # an error: the run stays resumable
            run.state["message"] = f"{type(exc).__name__}: {exc}"[:2000]
            run.save()
            mlflow.set_tag("status", "failed")
            raise
        finally:
            mlflow.end_run(mlflow_status)
    versions = run.out("register")["versions"] if run.done("register") else {}
    window = {}
    if run.done("export"):
        e = run.out("export")
        window = {"start": e["window_start"], "end": e["window_end"]}
    return RetrainSummary(
        run.id, status, message, str(run.folder), window, versions, ctx.metrics, resumed
    )


def scheduled_run() -> None:
    """What the scheduler fires: one retrain with the environment's settings."""
    summary = run_retrain(Settings())
    log.info("scheduled retrain %s: %s — %s", summary.run_id, summary.status, summary.message)
