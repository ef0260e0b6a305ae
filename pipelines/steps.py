"""The steps of the feed loop, each a function the CLI, the demo and the tests call alike."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import mlflow

from core import cache, context
from core.db import connect
from core.schema import apply_schema
from core.settings import Settings
from core.statements import Statements
from evaluation.oracle import eval_settings, evaluate, plots
from features import popular
from features.definitions import FEATURE_SERVICE
from features.store import apply, materialize
from simulator import writer
from simulator.config import WorldConfig
from simulator.world import World, generate
from training import registry
from training.heavy import HeavyParams
from training.light import LightParams
from training.registry import Registered
from training.train import fit


@dataclass(frozen=True)
class WorldSummary:
    rows: dict[str, int]
    cassandra: dict[str, int]
    out: str


class WorldExistsError(RuntimeError):
    """The keyspace already holds a world and replacing it was not asked for."""


class NoFutureError(RuntimeError):
    """`world advance` was asked for days the world does not hold back (any more)."""


WORLD_TABLES = (
    "users_by_id",
    "posts_by_id",
    "posts_by_author",
    "follows_by_user",
    "followers_by_user",
    "timeline_by_user",
    "feed_by_user",
    "user_context",
    "interactions_by_user",
    "interactions_by_post",
    "impressions_by_user",
)


def generate_world(
    settings: Settings,
    config: WorldConfig,
    *,
    hold_back_days: float = 0,
    to_cassandra: bool = True,
    replace: bool = False,
    progress: bool = False,
) -> tuple[World, WorldSummary]:
    """Generate a world, export its log to parquet and (by default) write it to Cassandra.

    A keyspace that already holds users is left untouched unless ``replace`` is true; then the
    world tables are truncated first, so two worlds never mix.

    ``hold_back_days``: the served log (requests, candidates, impressions, interactions) of the
    world's last days is kept out of the lake and out of Cassandra, under ``world_dir/future``;
    `advance_world` later serves it day by day as live traffic. Users, posts, follows and
    timelines are written whole. The returned world is the whole generated one; the summary
    counts what the lake got.
    """
    if not 0 <= hold_back_days < config.days:
        raise ValueError(f"hold_back_days must be in [0, {config.days}), got {hold_back_days}")
    cutoff = config.end - timedelta(days=hold_back_days)
    written: dict[str, int] = {}
    cluster = session = None
    if to_cassandra:
        apply_schema(settings)
        cluster, session = connect(settings)
    try:
        if (
            session is not None
            and session.execute(Statements(session, settings).any_user).one() is not None
        ):
            if not replace:
                raise WorldExistsError(
                    f"keyspace {settings.cassandra_keyspace} already holds a world; "
                    "pass --replace to replace it"
                )
            for table in WORLD_TABLES:
                session.execute(f"TRUNCATE {table}", timeout=60)
        world = generate(config, progress=progress)
        lake, future = writer.hold_back(world, cutoff)
        writer.drop_future(settings.world_dir)  # a replaced world's leftovers
        out = writer.write_parquet(lake, settings.world_dir, watermark=cutoff)
        if hold_back_days:
            writer.write_future(settings.world_dir, future, cutoff)
        if session is not None:
            written = writer.write_cassandra(lake, session, settings, progress=progress)
    finally:
        if cluster is not None:
            cluster.shutdown()
    rows = {n: len(getattr(lake, n)) for n in writer.LOG_TABLES}
    rows |= {f"future_{n}": len(f) for n, f in future.items() if hold_back_days}
    return world, WorldSummary(rows, written, str(out))


def rebuild_context(
    settings: Settings, users: list[int] | None = None, *, progress: bool = False
) -> dict[str, int]:
    """``core.context.rebuild`` for ``users`` (default: every user in the keyspace), applying
    the schema first (v6 adds the tables it writes); summed counts."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    apply_schema(settings)
    cluster, session = connect(settings)
    try:
        stmts = Statements(session, settings)
        ids = users or [r.user_id for r in session.execute(stmts.all_users)]
        now = datetime.now(UTC)
        totals = {"users": 0, "followees": 0, "blocked": 0, "engaged": 0, "timeline": 0}

        def one(user: int) -> dict[str, int]:
            return context.rebuild(session, stmts, user, now=now, days=settings.timeline_days)

        with (
            ThreadPoolExecutor(8) as pool,
            tqdm(total=len(ids), desc="context", unit="user", disable=not progress) as bar,
        ):
            for counts in pool.map(one, ids):
                totals["users"] += 1
                for k, v in counts.items():
                    totals[k] += v
                bar.update()
        # The service's Redis copies of what was rewritten are stale now.
        r = cache.client(settings)
        try:
            for start in range(0, len(ids), 1000):
                chunk = ids[start : start + 1000]
                keys = [cache.context_key(settings, u) for u in chunk]
                r.delete(*keys, *[cache.timeline_key(settings, u) for u in chunk])
        finally:
            r.close()
        return totals
    finally:
        cluster.shutdown()


def advance_world(settings: Settings, days: float, *, progress: bool = False) -> dict[str, int]:
    """Serve the next ``days`` of the held-back log: write it to Cassandra as live traffic.

    What was written is then cut from the future files (each rewritten atomically, then the
    cursor). Every write is an upsert, so a run that crashed half-way is repeated safely.
    Returns the rows written per table and the impressions still held back.
    """
    if days <= 0:
        raise ValueError(f"days must be positive, got {days}")
    _require_world(settings)
    held = writer.read_future(settings.world_dir)
    if held is None:
        raise NoFutureError(
            f"the world under {settings.world_dir} holds nothing back: generate it with "
            "`feedcast world generate --hold-back-days N`"
        )
    frames, cursor = held
    if all(f.empty for f in frames.values()):
        raise NoFutureError(
            f"no future left: the held-back log was served up to {cursor.isoformat()}"
        )
    until = cursor + timedelta(days=days)
    due, rest = writer.split_log(frames, until)
    apply_schema(settings)  # the served-page log needs schema v4
    cluster, session = connect(settings)
    try:
        counts = writer.write_served_log(due, session, settings, progress=progress)
    finally:
        cluster.shutdown()
    writer.write_future(settings.world_dir, rest, until)
    return counts | {"future_impressions": len(rest["impressions"])}


def features_apply(settings: Settings) -> dict[str, int]:
    _require_world(settings)
    return apply(settings)


def features_materialize(settings: Settings, end: datetime | None = None) -> int:
    """Load the latest feature rows into Redis and publish the popular list; returns its size."""
    if not (settings.feast_dir / "registry.db").exists():
        raise FileNotFoundError("no Feast registry yet: run `feedcast features apply` first")
    materialize(settings, end)
    return popular.publish(settings, end)


def _require_world(settings: Settings) -> None:
    if not (settings.world_dir / "impressions.parquet").exists():
        raise FileNotFoundError(
            f"no world under {settings.world_dir}: run `feedcast world generate` first"
        )


@dataclass(frozen=True)
class TrainResult:
    metrics: dict[str, float]
    light: Registered
    heavy: Registered
    run_id: str
    report: list[str]


def train(
    settings: Settings,
    *,
    alias: str | None = "champion",
    holdout_days: float = 1.0,
    light_params: LightParams | None = None,
    heavy_params: HeavyParams | None = None,
    progress: bool = False,
    register: bool = True,
) -> TrainResult:
    """Fit both rankers, judge them against the world's truth, log and register them."""
    registry.configure(settings)
    mlflow.set_experiment(settings.experiment)
    with mlflow.start_run(run_name="rankers") as run:
        light_params = light_params or LightParams()
        heavy_params = heavy_params or HeavyParams()
        mlflow.log_params(
            {f"light_{k}": v for k, v in asdict(light_params).items() if k != "extra"}
        )
        mlflow.log_params({f"heavy_{k}": v for k, v in asdict(heavy_params).items()})
        mlflow.log_params(
            {
                **settings.blend_weights,
                "holdout_days": holdout_days,
                "feature_service": FEATURE_SERVICE,
                "world": str(settings.world_dir),
            }
        )
        fitted = fit(
            settings, light_params, heavy_params, holdout_days=holdout_days, progress=progress
        )
        ev = evaluate(
            settings,
            fitted.split.holdout,
            fitted.split.cutoff,
            fitted.light,
            fitted.heavy,
            settings.blend_weights,
        )
        mlflow.log_metrics(ev.metrics)
        report = plots(ev, settings.world_dir / "report")
        for png in report:
            mlflow.log_artifact(str(png), artifact_path="report")
        light_reg = registry.log_light(
            fitted.light, fitted.light_example(), settings, alias, register
        )
        heavy_reg = registry.log_heavy(
            fitted.heavy, fitted.heavy_example(), settings, alias, register
        )
    return TrainResult(ev.metrics, light_reg, heavy_reg, run.info.run_id, [str(p) for p in report])


def run_eval(
    settings: Settings,
    config: WorldConfig,
    *,
    heavy_params: HeavyParams | None = None,
    light_params: LightParams | None = None,
) -> tuple[dict[str, float], Path]:
    """`feedcast eval`: a world of its own (parquet only), both rankers, the oracle's verdict."""
    local = eval_settings(settings, config)
    writer.write_parquet(generate(config, progress=True), local.world_dir)
    features_apply(local)
    result = train(
        local,
        alias=None,
        light_params=light_params,
        heavy_params=heavy_params,
        progress=True,
        register=False,  # an evaluation logs its models in its own run and promotes nothing
    )
    return result.metrics, local.world_dir / "report"
