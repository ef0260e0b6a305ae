"""``feedcast``: one command line for the stack, the world, features, training and serving."""

from __future__ import annotations

import contextlib
import json
from datetime import datetime
from pathlib import Path
from typing import Annotated

import httpx
import pandas as pd
import typer
from rich.table import Table

from core.settings import DEV_API_KEY, Settings
from pipelines.cli_common import console, fail, require_mlflow, settings
from pipelines.forecast_cli import capacity_app, forecast_app
from pipelines.ops_cli import ops_app
from pipelines.pipeline_cli import pipeline_app
from pipelines.prefetch_cli import prefetch_app
from pipelines.render import feed_table, metrics_table
from serving.autoscaling import PlanError, load_plan
from simulator.config import WorldConfig
from simulator.stats import world_stats as compute
from stack import ray_head
from stack.proc import StackError
from stack.ray_head import auth_env

app = typer.Typer(
    help="feedcast: ML-ranked feeds on Cassandra, Feast/Redis, LightGBM, MLflow and Ray Serve.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
stack_app = typer.Typer(
    help="The local stack: Cassandra, Redis, MLflow, the media origin and edge, Prometheus and "
    "Alertmanager (and the Ray head).",
    no_args_is_help=True,
)
world_app = typer.Typer(
    help="The synthetic world: users, follows, posts, sessions.", no_args_is_help=True
)
features_app = typer.Typer(
    help="Feast feature tables, registry and online store.", no_args_is_help=True
)
serve_app = typer.Typer(help="The Ray Serve feed service.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
app.add_typer(world_app, name="world")
app.add_typer(features_app, name="features")
app.add_typer(serve_app, name="serve")

app.add_typer(prefetch_app, name="prefetch")
app.add_typer(forecast_app, name="forecast")
app.add_typer(capacity_app, name="capacity")
app.add_typer(pipeline_app, name="pipeline")
app.add_typer(ops_app, name="ops")


@app.callback()
def _before_any_command() -> None:
    """Export the stack's Ray token settings before anything imports ray (read at import)."""
    # Hence no top-level import of this module may load ray (stack.ray_head does not).

    # A bad configuration is reported by the command that reads it, with its own message.
    with contextlib.suppress(Exception):
        auth_env(Settings())


@stack_app.command("up")
def stack_up() -> None:
    """Start Cassandra, Redis and MLflow on 127.0.0.1 (idempotent) and apply the schema."""
    from stack import local  # lazy: the redis client (~0.1 s at import)

    try:
        local.up(settings())
    except StackError as exc:
        fail(str(exc))


@stack_app.command("down")
def stack_down() -> None:
    """Stop exactly what `stack up` and `serve start` started (by pid file)."""
    from stack import local  # lazy: the redis client (~0.1 s at import)

    local.down(settings())


@stack_app.command("status")
def stack_status() -> None:
    """Which components run and answer."""
    from stack import local  # lazy: the redis client (~0.1 s at import)

    table = Table("component", "pid", "healthy")
    status = local.status(settings())
    for name, s in status.items():
        table.add_row(name, str(s["pid"] or "-"), "yes" if s["healthy"] else "no")
    console.print(table)


@world_app.command("generate")
def world_generate(
    users: Annotated[int, typer.Option(min=20, max=1_000_000, help="Number of users.")] = 2000,
    days: Annotated[int, typer.Option(min=2, max=90, help="Simulated days.")] = 7,
    seed: Annotated[int, typer.Option(min=0, help="Seed: same seed and end, same world.")] = 0,
    end: Annotated[
        datetime | None, typer.Option(help="End of the simulated period (UTC); default: this hour.")
    ] = None,
    cassandra: Annotated[bool, typer.Option(help="Also write the world to Cassandra.")] = True,
    replace: Annotated[
        bool, typer.Option(help="Replace a world already in the keyspace (truncates its tables).")
    ] = False,
    hold_back_days: Annotated[
        float,
        typer.Option(
            min=0,
            help="Keep the served log of the last N days out of the lake and Cassandra, for "
            "`world advance` to serve later as live traffic.",
        ),
    ] = 0,
) -> None:
    """Generate a world, write it to Cassandra and export its interaction log to parquet."""
    from pipelines.steps import WorldExistsError, generate_world  # lazy: torch, feast: ~6 s

    config = WorldConfig(users=users, days=days, seed=seed, **({"end": end} if end else {}))
    try:
        _, summary = generate_world(
            settings(),
            config,
            hold_back_days=hold_back_days,
            to_cassandra=cassandra,
            replace=replace,
            progress=True,
        )
    except (WorldExistsError, ValueError) as exc:
        fail(str(exc))
    console.print_json(
        json.dumps({"rows": summary.rows, "cassandra": summary.cassandra, "parquet": summary.out})
    )


@world_app.command("advance")
def world_advance(
    days: Annotated[
        float, typer.Option(min=0.001, help="Simulated days of held-back traffic to serve.")
    ] = 1.0,
) -> None:
    """Serve the next days of a held-back world to Cassandra, as the live service would log them."""
    from pipelines.steps import NoFutureError, advance_world  # lazy: torch, feast: ~6 s

    try:
        written = advance_world(settings(), days, progress=True)
    except (NoFutureError, FileNotFoundError) as exc:
        fail(str(exc))
    console.print_json(json.dumps(written))


@world_app.command("rebuild-context")
def world_rebuild_context(
    user: Annotated[
        list[int] | None, typer.Option(help="Only this user (repeatable); default: every user.")
    ] = None,
) -> None:
    """Rewrite each user's read context (follows, blocks, posts engaged with lately) and recent
    timeline from the tables of record: after the schema v6 migration, or to repair a context
    whose write failed. Idempotent; the feed keeps serving meanwhile."""
    from pipelines.steps import rebuild_context  # lazy: the Cassandra driver

    try:
        counts = rebuild_context(settings(), user or None, progress=True)
    except Exception as exc:
        fail(f"context rebuild failed: {type(exc).__name__}: {exc}")
    console.print_json(json.dumps(counts))


@world_app.command("stats")
def world_stats() -> None:
    """Realism figures of the current world: follower exponent, request Zipf, churn."""
    s = settings()
    if not (s.world_dir / "impressions.parquet").exists():
        fail(f"no world under {s.world_dir}: run `feedcast world generate` first")
    stats = compute(
        pd.read_parquet(s.world_dir / "users.parquet"),
        pd.read_parquet(s.world_dir / "impressions.parquet"),
    )
    aims = {
        "follower_exponent": "2–3 in real follow graphs",
        "request_zipf_exponent": "aim 0.7–1.0",
        "one_hit_share": "CDN traces: 0.3–0.6",
        "hourly_top10_churn": "share replaced hourly",
    }
    table = Table("statistic", "value", "for judging")
    for k, v in stats.items():
        table.add_row(k, f"{v:.3f}" if v < 1000 else f"{v:,.0f}", aims.get(k, ""))
    console.print(table)


@features_app.command("apply")
def features_apply() -> None:
    """Compute the feature tables from the world log and register the Feast objects."""
    from pipelines.steps import features_apply as step  # lazy: torch, feast: ~6 s

    try:
        counts = step(settings())
    except FileNotFoundError as exc:
        fail(str(exc))
    console.print_json(json.dumps(counts))


@features_app.command("materialize")
def features_materialize() -> None:
    """Load the latest feature values into the Redis online store and publish the popular
    list (the feed's explore source and last-resort page)."""
    from pipelines.steps import features_materialize as step  # lazy: torch, feast: ~6 s

    try:
        n = step(settings())
    except FileNotFoundError as exc:
        fail(str(exc))
    console.print(f"materialized; popular list: {n} posts")


@app.command("train")
def train(
    holdout_days: Annotated[float, typer.Option(min=0.1, help="Days held out at the end.")] = 1.0,
    alias: Annotated[str, typer.Option(help="Alias to point at the new versions.")] = "champion",
    epochs: Annotated[int, typer.Option(min=1, max=200, help="Heavy ranker epochs (max).")] = 8,
) -> None:
    """Train the light (LightGBM) and heavy (PyTorch) rankers, judge them, register both."""
    from pipelines.steps import train as step  # lazy: torch, feast: ~6 s
    from training.heavy import HeavyParams  # lazy: torch (~4 s at import)

    s = settings()
    require_mlflow(s)
    result = step(
        s,
        alias=alias,
        holdout_days=holdout_days,
        heavy_params=HeavyParams(epochs=epochs),
        progress=True,
    )
    console.print(metrics_table(result.metrics))
    console.print(
        f"registered {result.light.name}/{result.light.version} and "
        f"{result.heavy.name}/{result.heavy.version} as @{alias}; "
        f"report: {', '.join(result.report)}"
    )


@app.command("eval")
def eval_(
    world_config: Annotated[
        Path | None, typer.Option(help="WorldConfig as JSON/YAML (a world manifest works too).")
    ] = None,
    seed: Annotated[
        int | None, typer.Option(min=0, help="World seed (overrides the file).")
    ] = None,
    users: Annotated[int | None, typer.Option(min=20, help="Users (overrides the file).")] = None,
    days: Annotated[int | None, typer.Option(min=3, help="Days (overrides the file).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the metrics here.")] = None,
    epochs: Annotated[int, typer.Option(min=1, max=200, help="Heavy ranker epochs (max).")] = 8,
) -> None:
    """Generate a world, train both rankers on it and judge them against its truth.

    Needs no Cassandra: the world lives in its own folder under FEEDCAST_HOME/eval/. Writes
    the metrics (JSON), PNG plots beside them, and logs everything to MLflow.
    """
    from pipelines.steps import run_eval  # lazy: torch, feast: ~6 s

    try:
        base = WorldConfig.from_file(world_config) if world_config else WorldConfig()
        config = WorldConfig(
            **{
                **base.model_dump(),
                **{
                    k: v
                    for k, v in {"seed": seed, "users": users, "days": days}.items()
                    if v is not None
                },
            }
        )
    except (OSError, ValueError) as exc:
        fail(f"world config: {exc}")
    from training.heavy import HeavyParams  # lazy: torch (~4 s at import)

    s = settings()
    require_mlflow(s)
    metrics, folder = run_eval(s, config, heavy_params=HeavyParams(epochs=epochs))
    console.print(metrics_table(metrics))
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(metrics, indent=2))
        console.print(f"metrics → {json_out}")
    console.print(f"plots and world → {folder}")


@serve_app.command("start")
def serve_start() -> None:
    """Start the Ray head (if needed) and deploy the feed service; print its URL."""
    # lazy: ray and the whole service (~6 s); ray must come after _before_any_command's export
    from serving.deploy import NotReadyError, deploy, preflight
    from serving.placement import PlacementError

    s = settings()
    try:  # before Ray starts: what the replicas load must be there
        preflight(s)
    except NotReadyError as exc:
        fail(str(exc))
    if s.serve_capacity_plan is not None:  # a bad plan fails here, before Ray starts
        try:
            hours = len(load_plan(s.serve_capacity_plan)["hours"])
        except PlanError as exc:
            fail(str(exc))
        console.print(f"capacity   plan of {hours} h from {s.serve_capacity_plan}")
    try:
        console.print(f"ray        {ray_head.up(s)}")
    except StackError as exc:
        fail(str(exc))
    try:
        url = deploy(s, address=ray_head.address(s), checked=True)
    except PlacementError as exc:
        fail(str(exc))
    console.print(f"feed service at {url}  (try: curl {url}/v1/feed/1?limit=5)")


@serve_app.command("stop")
def serve_stop() -> None:
    """Stop the Ray head started by `serve start` (and with it the feed service)."""
    console.print("stopped" if ray_head.down(settings()) else "not running")


# The key the service commands send: --api-key, else FEEDCAST_API_KEY, else the development key.
ApiKey = Annotated[
    str,
    typer.Option(envvar="FEEDCAST_API_KEY", help="API key to send (default: the development key)."),
]


@app.command("feed")
def feed(
    user_id: Annotated[int, typer.Argument(help="The reader.")],
    limit: Annotated[int, typer.Option(min=1, max=100, help="Items per page.")] = 10,
    pages: Annotated[
        int,
        typer.Option(
            min=1,
            max=50,
            help="Pages to scroll: the first is ranked now, each next one follows the previous "
            "page's cursor through the same ranked session.",
        ),
    ] = 1,
    debug: Annotated[bool, typer.Option(help="Show each item's ranking score.")] = False,
    api_key: ApiKey = DEV_API_KEY,
) -> None:
    """Ask the running service for a user's feed and print each page as a table, with media
    URLs at the edge; `--pages 3` scrolls three pages with cursors."""
    s = settings()
    cursor: str | None = None
    with httpx.Client(base_url=s.serve_url, headers={"X-API-Key": api_key}, timeout=10) as c:
        for _ in range(pages):
            params: dict[str, str | int] = {"limit": limit, "debug": str(debug).lower()}
            if cursor:
                params["cursor"] = cursor
            try:
                r = c.get(f"/v1/feed/{user_id}", params=params)
            except httpx.HTTPError as exc:
                fail(
                    f"feed service at {s.serve_url} unreachable ({exc}); run `feedcast serve start`"
                )
            if r.status_code != 200:
                fail(f"HTTP {r.status_code}: {r.text}")
            body = r.json()
            console.print(feed_table(body))
            cursor = body.get("next_cursor")
            if not cursor:
                if pages > 1:
                    console.print("[dim]end of the session: no next_cursor[/dim]")
                break


@app.command("upload")
def upload(
    photo: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="A JPEG, PNG or WebP file.")
    ],
    author_id: Annotated[int, typer.Option("--author", min=1, help="Who posts it.")],
    topic: Annotated[int, typer.Option(min=0, max=1023, help="The post's topic.")] = 0,
    wait_s: Annotated[
        float,
        typer.Option("--wait", min=0, help="Seconds to wait for the renditions (0: do not wait)."),
    ] = 60.0,
    api_key: ApiKey = DEV_API_KEY,
) -> None:
    """Upload a photo to the running service (POST /v1/uploads), wait until the upload tier has
    rendered it, and print its renditions' URLs at the edge."""
    import time

    s = settings()
    data = photo.read_bytes()
    with httpx.Client(base_url=s.serve_url, headers={"X-API-Key": api_key}, timeout=30) as c:
        try:
            r = c.post(
                "/v1/uploads",
                files={"file": (photo.name, data, "application/octet-stream")},
                data={"author_id": str(author_id), "topic": str(topic)},
            )
        except httpx.HTTPError as exc:
            fail(f"feed service at {s.serve_url} unreachable ({exc}); run `feedcast serve start`")
        if r.status_code != 202:
            fail(f"HTTP {r.status_code}: {r.text}")
        body = r.json()
        again = " (the same bytes were uploaded before: that upload)" if body["duplicate"] else ""
        console.print(f"post {body['post_id_str']}: {body['status']}{again}")
        deadline = time.monotonic() + wait_s
        while body["status"] == "processing" and time.monotonic() < deadline:
            time.sleep(0.5)
            r = c.get(body["status_url"])
            if r.status_code != 200:
                fail(f"HTTP {r.status_code}: {r.text}")
            body = r.json() | {"status_url": body["status_url"]}
    if body["status"] == "failed":
        fail(f"post {body['post_id_str']} failed: {body['reason']}")
    if body["status"] == "processing":
        console.print(f"still processing after {wait_s:g} s: GET {s.serve_url}{body['status_url']}")
        return
    table = Table("variant", "format", "size", "bytes")
    table.add_column("url", overflow="fold")  # whole, wrapped: a URL cut short is no URL
    for x in body["renditions"]:
        table.add_row(x["variant"], x["format"], f"{x['width']}x{x['height']}", str(x["bytes"]),
                      x["url"])  # fmt: skip
    console.print(table)


apikey_app = typer.Typer(help="API keys of the feed service.", no_args_is_help=True)
app.add_typer(apikey_app, name="apikey")


@apikey_app.command("new")
def apikey_new() -> None:
    """Make a new API key. Give the key to the caller; put only its hash in
    FEEDCAST_API_KEY_HASHES (comma-separated) where the service runs."""
    from serving.security import new_key  # lazy: the redis client (~0.1 s at import)

    key, digest = new_key()
    console.print(f"key  (give to the caller, shown once): {key}")
    console.print(f"hash (FEEDCAST_API_KEY_HASHES):        {digest}")


@app.command("config")
def config() -> None:
    """Every setting: its environment variable, effective value and meaning."""
    s = settings()
    table = Table("variable", "value", "meaning")
    for name, field in Settings.model_fields.items():
        table.add_row(f"FEEDCAST_{name.upper()}", str(getattr(s, name)), field.description or "")
    console.print(table)


@app.command("demo")
def demo(
    users: Annotated[int, typer.Option(min=20, help="Users in the demo world.")] = 2000,
    seed: Annotated[int, typer.Option(min=0, help="World seed.")] = 0,
) -> None:
    """The whole loop: stack → world → features → train → serve → ranked feeds and metrics."""
    from pipelines.demo import run  # lazy: ray, torch, feast: ~7 s; ray after auth_env

    try:
        run(settings(), users=users, seed=seed, console=console)
    except Exception as exc:
        fail(f"{type(exc).__name__}: {exc}")
