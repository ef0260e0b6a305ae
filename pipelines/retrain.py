"""The retraining pipeline: export → validate → commit → features → training set → validate →
train (Ray Train) → forecaster → evaluate against @champion → gate → register @challenger →
promote to @champion. Serving replicas poll the alias and swap the pair live.

A run is a folder under ``settings.pipeline_dir/runs/<run id>``: every step reads what earlier
steps left there *by path* and records itself in ``state.json`` (written atomically) when done.
So a run killed at any point is finished by the next ``feedcast pipeline run retrain``: it
resumes the unfinished run, skips the steps already done, and reuses the same MLflow run — a model
version registered before the crash is found by that run id and not registered again.

The steps are declared once, in order, in :data:`PIPELINE`. Each returns a frozen dataclass (a
:class:`StepOutput`) that ``state.json`` records under ``steps.<name>.out``; a later step reads
it back typed with ``ctx.run.out(ExportOut)``, so a resumed run hands on exactly what a
straight-through one does.

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
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic

import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from core import constants as C
from core.settings import REPO_ROOT, Settings
from pipelines.gate import decide
from pipelines.retrain_state import (
    TERMINAL,
    CommitOut,
    EvaluateOut,
    ExportChecks,
    ExportOut,
    FeaturesOut,
    ForecasterOut,
    GateOut,
    OutT,
    PromoteOut,
    RegisterOut,
    RetrainSummary,
    StepOutput,
    TrainingSetChecks,
    TrainingSetOut,
    TrainOut,
)
from pipelines.validate import ValidationError, check_export, check_training_set, expected_rows
from simulator.traffic import from_lake
from training.forecast import Forecaster, ForecastParams

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from pipelines.lock import RunLock
    from serving.model import Rankers
    from training.heavy import HeavyModel

log = logging.getLogger("feedcast.pipelines.retrain")


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


class Run:
    """One run's folder and its ``state.json`` (:attr:`state`, the record as written)."""

    def __init__(self, folder: Path, state: dict[str, Any]) -> None:
        self.folder, self.state = folder, state

    @property
    def id(self) -> str:
        return str(self.state["run_id"])

    @property
    def status(self) -> str:
        return str(self.state["status"])

    @property
    def mlflow_run_id(self) -> str | None:
        """The MLflow run that records this run (None until the run first started)."""
        return self.state.get("mlflow_run_id")

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

    def get(self, kind: type[OutT]) -> OutT | None:
        """What the step that records ``kind`` handed on, or None when it has not run."""
        name = STEP_OF[kind].name
        return kind.from_json(self.state["steps"][name]["out"]) if self.done(name) else None

    def out(self, kind: type[OutT]) -> OutT:
        """What the step that records ``kind`` handed on (it has run)."""
        return kind.from_json(self.state["steps"][STEP_OF[kind].name]["out"])

    def mark(self, step: str, out: StepOutput, seconds: float) -> None:
        self.state["steps"][step] = {
            "at": datetime.now(UTC).isoformat(),
            "seconds": round(seconds, 2),
            "out": out.to_json(),
        }
        self.save()

    def started(self, mlflow_run_id: str) -> None:
        self.state["mlflow_run_id"] = mlflow_run_id
        self.save()

    def note(self, message: str) -> None:
        """Say why the run is where it is, leaving it resumable."""
        self.state["message"] = message
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
        return f"feedcast {metadata.version('feedcast')}"


class Context:
    """What the steps share: settings, options, the run, and the open MLflow run."""

    def __init__(self, settings: Settings, options: RetrainOptions, run: Run) -> None:
        self.settings, self.options, self.run = settings, options, run
        self.metrics: dict[str, float] = {}

    def path(self, name: str) -> Path:
        return self.run.folder / name

    def window(self) -> tuple[pd.Timestamp, pd.Timestamp]:
        return self.run.out(ExportOut).window

    def log_metrics(self, metrics: dict[str, float]) -> None:
        import mlflow  # lazy: mlflow costs ~1 s at import

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
    from simulator.writer import CURSOR_FILE, FUTURE_DIR  # lazy: loads cassandra-driver, ~0.2 s

    cursor_file = ctx.settings.world_dir / FUTURE_DIR / CURSOR_FILE
    if not cursor_file.exists():
        return None
    # Only the cursor: the held-back log itself is not needed here.
    cursor = datetime.fromisoformat(json.loads(cursor_file.read_text())["advanced_to"])
    return min(cursor, datetime.now(UTC)) - pd.Timedelta(seconds=ctx.settings.label_delay_s)


def step_export(ctx: Context) -> ExportOut:
    from pipelines.export import export_log  # lazy: loads cassandra-driver, ~0.2 s

    res = export_log(ctx.settings, ctx.path("export"), upto=ctx.options.upto or sim_clock(ctx))
    out = ExportOut(
        window_start=pd.Timestamp(res.window_start).isoformat(),
        window_end=pd.Timestamp(res.window_end).isoformat(),
        rows=dict(res.rows),
    )
    import mlflow  # lazy: mlflow costs ~1 s at import

    mlflow.set_tags({"data_window_start": out.window_start, "data_window_end": out.window_end})
    ctx.log_metrics({f"export_{k}": v for k, v in res.rows.items()})
    return out


def _previous(ctx: Context, kind: type[OutT]) -> OutT | None:
    """What the step recording ``kind`` handed on in the latest earlier run that got past it."""
    for run in reversed(Run.all(ctx.settings)):
        if run.id < ctx.run.id and (out := run.get(kind)) is not None:
            return out
    return None


def step_validate_export(ctx: Context) -> ExportChecks:
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
    return ExportChecks(report.stats)


def step_commit(ctx: Context) -> CommitOut:
    from pipelines.export import commit_export  # lazy: loads cassandra-driver, ~0.2 s

    return CommitOut(
        {k: int(v) for k, v in commit_export(ctx.settings, ctx.path("export")).items()}
    )


def step_features(ctx: Context) -> FeaturesOut:
    """Feature tables from the lake, `feast apply`, then materialize the new rows into Redis.

    Feast's ``materialize_incremental`` starts from the end of the last materialization; the
    rows of this export can be older than that (late-arriving days), so the window materialized
    starts at the export's own start. Redis keeps the newest row per key, so rows materialized
    twice change nothing.
    """
    from features import popular  # lazy: loads the redis client, ~0.15 s
    from features.store import apply, open_store  # lazy: feast costs ~4 s at import

    counts = apply(ctx.settings)
    start, _ = ctx.window()
    end = datetime.now(UTC)
    open_store(ctx.settings).materialize(
        start_date=(start - pd.Timedelta(hours=2)).to_pydatetime(), end_date=end
    )
    n_popular = popular.publish(ctx.settings, end)
    return FeaturesOut(tables=counts, popular=n_popular, materialized_to=end.isoformat())


def step_training_set(ctx: Context) -> TrainingSetOut:
    from training.dataset import training_frame  # lazy: imports feast, ~4 s

    frame = training_frame(ctx.settings)
    tmp = ctx.path(".training_set.parquet")
    frame.to_parquet(tmp, index=False)
    tmp.replace(ctx.path("training_set.parquet"))
    return TrainingSetOut(rows=len(frame))


def step_validate(ctx: Context) -> TrainingSetChecks:
    from training.dataset import MODEL_FEATURES  # lazy: imports feast, ~4 s

    frame = pd.read_parquet(ctx.path("training_set.parquet"))
    # The row count from the file's footer: no column needs reading.
    lake_rows = pq.ParquetFile(ctx.settings.world_dir / "impressions.parquet").metadata.num_rows
    start, _ = ctx.window()
    previous = _previous(ctx, TrainingSetChecks)
    report = check_training_set(
        frame,
        expected_rows=lake_rows,
        features=MODEL_FEATURES,
        previous=previous.stats if previous is not None else None,
        recent=(frame[C.EVENT_TS] >= start).to_numpy(),
    )
    ctx.log_metrics({f"validate_{k}": v for k, v in report.stats.items()})
    report.raise_if_failed("the training set")
    return TrainingSetChecks(report.stats)


def step_train(ctx: Context) -> TrainOut:
    """Both rankers through Ray Train on the rows before the export window (the holdout is the
    window itself: data the champion never saw either)."""
    from training.distributed import train_heavy_ray, train_light_ray  # lazy: ray+torch+feast
    from training.heavy import HeavyParams  # lazy: torch and feast, ~5 s at import
    from training.light import LightParams  # lazy: imports training.dataset, so feast (~4 s)

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
    return TrainOut(train_rows=len(train), holdout_rows=len(holdout))


def step_forecaster(ctx: Context) -> ForecasterOut:
    """Refit the traffic forecaster on the lake's hourly requests, when there is history enough."""
    series = from_lake(ctx.settings.world_dir)
    params = ForecastParams()
    needed = params.min_history
    if len(series) < needed:
        return ForecasterOut(
            fitted=False,
            reason=f"{len(series)} hours of request history; the forecaster needs {needed}",
        )
    y = series["requests"].to_numpy(np.float64)
    model = Forecaster.fit(y, pd.DatetimeIndex(series.index), params)
    model.save(ctx.path("forecaster"))
    series[["requests"]].rename(columns={"requests": "y"}).rename_axis(
        "ds"
    ).reset_index().to_parquet(ctx.path("forecast_history.parquet"), index=False)
    return ForecasterOut(fitted=True, hours=len(series))


def _scores(
    prefix: str,
    light_model: lgb.Booster,
    heavy: HeavyModel,
    frame: pd.DataFrame,
    weights: dict[str, float],
) -> dict[str, Any]:
    """A model pair's scores of the holdout: heads at their logged slots (what AUC judges), the
    serving blend (what ranks a page) and the light ranker's score."""
    from training import light  # lazy: imports training.dataset, so feast (~4 s)
    from training.heavy import blend  # lazy: torch and feast, ~5 s at import

    pred = heavy.predict(frame, serving_like=False)
    out: dict[str, Any] = {f"{prefix}_{h}": v for h, v in pred.items()}
    out[f"{prefix}_blend"] = blend(heavy.predict(frame, serving_like=True), weights)
    out[f"{prefix}_light"] = light_model.predict(light.features_matrix(frame, serving_like=True))
    return out


def _champion(settings: Settings) -> Rankers | None:
    """The pair behind ``@model_alias``, or None when there is none to compare with (the first
    run): a ranker not registered yet, a version gone, or a ranker without the alias.

    Matched by MLflow's error code, never its message. A missing registered model or version is
    ``RESOURCE_DOES_NOT_EXIST``; a missing alias on a registered model is
    ``INVALID_PARAMETER_VALUE`` (MLflow 3's sqlalchemy store, hence its REST server too), a code
    that other bad arguments share, so that one counts only when a ranker indeed lacks the alias.
    """
    from mlflow.exceptions import MlflowException  # lazy: mlflow costs ~1 s at import
    from mlflow.protos import databricks_pb2 as codes  # lazy: mlflow costs ~1 s at import

    from serving.model import load_alias  # lazy: mlflow, torch and feast, ~6 s at import
    from training import registry  # lazy: mlflow, torch and feast, ~6 s at import

    alias = settings.model_alias
    try:
        return load_alias(settings, alias)
    except MlflowException as exc:
        if exc.error_code == codes.ErrorCode.Name(codes.RESOURCE_DOES_NOT_EXIST):
            log.info("no champion to compare with: %s", exc)
            return None
        if exc.error_code == codes.ErrorCode.Name(codes.INVALID_PARAMETER_VALUE):
            # load_alias resolves the light ranker first, so each model asked about here is
            # registered: a ranker resolved, or the one that failed with this code.
            client = registry.configure(settings)
            for name in (settings.model_name, settings.heavy_model_name):
                if alias not in client.get_registered_model(name).aliases:
                    log.info("no champion to compare with: %s has no @%s", name, alias)
                    return None
        raise


def step_evaluate(ctx: Context) -> EvaluateOut:
    """Challenger and champion scored on the same holdout, written to ``scored.parquet``."""
    from training.heavy import HeavyModel  # lazy: torch and feast, ~5 s at import

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
    if (current := _champion(ctx.settings)) is not None:
        champion = current.label
        cols.update(
            _scores("champion", current.light, current.heavy, holdout, ctx.settings.blend_weights)
        )
    scored = pd.DataFrame(cols)
    scored.to_parquet(ctx.path("scored.parquet"), index=False)
    return EvaluateOut(champion=champion, rows=len(scored))


def step_gate(ctx: Context) -> GateOut:
    scored = pd.read_parquet(ctx.path("scored.parquet"))
    champion = ctx.run.out(EvaluateOut).champion
    decision = decide(
        scored, tolerance=ctx.settings.gate_tolerance, has_champion=champion is not None
    )
    ctx.log_metrics(decision.metrics())
    return GateOut(
        promote=decision.promote,
        reason=decision.reason,
        champion=champion,
        checks=tuple(decision.checks),
    )


def _existing_version(client: MlflowClient, name: str, run_id: str) -> str | None:
    found = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    return str(max(int(v.version) for v in found)) if found else None


def step_register(ctx: Context) -> RegisterOut:
    """Register both rankers (and the forecaster) from this run as ``@challenger``, once: a
    version this MLflow run already registered (before a crash) is found, not made again."""
    from training import forecast_registry, registry  # lazy: mlflow, torch and feast, ~6 s
    from training.heavy import HeavyModel  # lazy: torch and feast, ~5 s at import
    from training.light import features_matrix  # lazy: imports training.dataset, so feast (~4 s)

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
    if ctx.run.out(ForecasterOut).fitted:
        if (v := _existing_version(client, forecast_registry.FORECAST_MODEL_NAME, run_id)) is None:
            v = forecast_registry.log_forecaster(
                Forecaster.load(ctx.path("forecaster")),
                pd.read_parquet(ctx.path("forecast_history.parquet")),
                s,
                None,
            ).version
        versions[forecast_registry.FORECAST_MODEL_NAME] = v
    for name, version in versions.items():
        client.set_registered_model_alias(name, "challenger", version)
    return RegisterOut(versions=versions)


def step_promote(ctx: Context) -> PromoteOut:
    """Move ``@champion`` onto the challengers (each alias move is atomic; replicas swap the
    ranker pair once both aliases point at the same run)."""
    from training import registry  # lazy: mlflow, torch and feast, ~6 s at import

    gate = ctx.run.out(GateOut)
    versions = ctx.run.out(RegisterOut).versions
    if not gate.promote:
        raise Refused(f"kept @{ctx.settings.model_alias}: {gate.reason}")
    client = registry.configure(ctx.settings)
    for name, version in versions.items():
        client.set_registered_model_alias(name, ctx.settings.model_alias, version)
    return PromoteOut(promoted=versions)


# -- the pipeline, declared once ------------------------------------------------------------------


@dataclass(frozen=True)
class Step(Generic[OutT]):
    """One step: its name (in ``state.json`` and ``--until``), what it does, what it records."""

    name: str
    func: Callable[[Context], OutT]
    output: type[OutT]


PIPELINE: tuple[Step[Any], ...] = (
    Step("export", step_export, ExportOut),
    Step("validate_export", step_validate_export, ExportChecks),
    Step("commit", step_commit, CommitOut),
    Step("features", step_features, FeaturesOut),
    Step("training_set", step_training_set, TrainingSetOut),
    Step("validate", step_validate, TrainingSetChecks),
    Step("train", step_train, TrainOut),
    Step("forecaster", step_forecaster, ForecasterOut),
    Step("evaluate", step_evaluate, EvaluateOut),
    Step("gate", step_gate, GateOut),
    Step("register", step_register, RegisterOut),
    Step("promote", step_promote, PromoteOut),
)
STEPS = tuple(step.name for step in PIPELINE)
STEP_OF: dict[type[StepOutput], Step[Any]] = {step.output: step for step in PIPELINE}
assert len(STEP_OF) == len(PIPELINE), "each step records a type of its own"


# -- the flow -------------------------------------------------------------------------------------


def _pick_run(settings: Settings, options: RetrainOptions) -> tuple[Run, bool]:
    """The unfinished run to resume (a crash or an error left it), or a new one."""
    runs = [r for r in Run.all(settings) if r.status not in TERMINAL]
    if runs and not options.new:
        return runs[-1], True
    for r in runs:  # --new: the unfinished ones are abandoned, and say so
        r.finish("stopped", "abandoned: a later run was started with --new")
    return Run.new(settings), False


def _steps(ctx: Context, lock: RunLock) -> tuple[str, str]:
    """Run the steps not yet done; the run's status and a line saying why it ended there."""
    run, options, settings = ctx.run, ctx.options, ctx.settings
    try:
        for step in PIPELINE:
            lock.check()  # a run that lost its lock stops before the next step
            if run.done(step.name):
                continue
            log.info("run %s: %s", run.id, step.name)
            t0 = time.perf_counter()
            out = step.func(ctx)
            run.mark(step.name, out, time.perf_counter() - t0)
            failpoint(f"after:{step.name}")
            if step.name == options.until:
                return "paused", f"stopped after {step.name} as asked (resumable)"
    except NothingNew as exc:
        return "nothing-new", str(exc)
    except Refused as exc:
        return "refused", str(exc)
    except ValidationError as exc:
        return "stopped", str(exc)
    promoted = run.out(PromoteOut).promoted
    return "promoted", f"@{settings.model_alias} → " + ", ".join(
        f"{n}/{v}" for n, v in promoted.items()
    )


def run_retrain(settings: Settings, options: RetrainOptions | None = None) -> RetrainSummary:
    """One retrain under the run lock; resumes an unfinished run. Raises ``LockHeld`` when
    another run holds the lock and ``ValidationError`` when the data stops the run."""
    import mlflow  # lazy: mlflow costs ~1 s at import

    from pipelines.lock import RunLock  # lazy: loads the redis client, ~0.15 s
    from training import registry  # lazy: mlflow, torch and feast, ~6 s at import

    options = options or RetrainOptions()
    owner = {"run_id": "retrain (resuming or starting)", "command": "pipeline run retrain"}
    with RunLock(settings, owner=owner) as lock:
        run, resumed = _pick_run(settings, options)
        ctx = Context(settings, options, run)
        registry.configure(settings)
        mlflow.set_experiment(settings.experiment)
        active = mlflow.start_run(run_id=run.mlflow_run_id, run_name=f"retrain {run.id}")
        mlflow_status = "FAILED"
        try:
            if run.mlflow_run_id is None:
                run.started(active.info.run_id)
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
                run.note(message)
            else:
                run.finish(status, message)
            mlflow_status = "FAILED" if status == "stopped" else "FINISHED"
        except BaseException as exc:  # an error: the run stays resumable
            run.note(f"{type(exc).__name__}: {exc}"[:2000])
            mlflow.set_tag("status", "failed")
            raise
        finally:
            mlflow.end_run(mlflow_status)
    window: dict[str, str] = {}
    if (exported := run.get(ExportOut)) is not None:
        window = {"start": exported.window_start, "end": exported.window_end}
    registered = run.get(RegisterOut)
    versions = registered.versions if registered is not None else {}
    return RetrainSummary(
        run.id, status, message, str(run.folder), window, versions, ctx.metrics, resumed
    )


def scheduled_run() -> None:
    """What the scheduler fires: one retrain with the environment's settings."""
    summary = run_retrain(Settings())
    log.info("scheduled retrain %s: %s — %s", summary.run_id, summary.status, summary.message)
