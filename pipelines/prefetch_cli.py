"""``feedcast prefetch ...``: trace replay of cache policies (and the prefetch jobs)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.table import Table

from core.settings import Settings
from pipelines.render import figures_table
from prefetch.replay.report import plot

prefetch_app = typer.Typer(
    help="Prefetch from engagement predictions: trace replay, warming jobs.",
    no_args_is_help=True,
)
console = Console()


@prefetch_app.command("replay")
def replay_cmd(
    seed: Annotated[int, typer.Option(help="Seed of the world (and so of its trace).")] = 0,
    json_out: Annotated[
        Path, typer.Option("--json", help="Where to write the figures (JSON); plots go beside it.")
    ] = Path("bench/results/prefetch.json"),
    world_config: Annotated[
        Path | None,
        typer.Option(help="A world config (YAML/JSON) on top of the replay's default world."),
    ] = None,
    users: Annotated[
        int | None, typer.Option(min=20, help="Users of the world (default 12,000: ~7 M requests).")
    ] = None,
    days: Annotated[int | None, typer.Option(min=2, help="Simulated days (default 14).")] = None,
    budget: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Prefetch byte budget, share of demand bytes.")
    ] = 0.10,
    no_reference: Annotated[
        bool, typer.Option("--no-reference", help="Skip the libCacheSim cross-check.")
    ] = False,
    real_photos: Annotated[
        int,
        typer.Option(
            min=0,
            help="Photo sizes from the media tier's own renditions: this many of the most "
            "requested photos rendered (under a second each, cached under the data folder), every "
            "other photo one of their sizes. 0: the simulated sizes.",
        ),
    ] = 300,
) -> None:
    """Replay the world's media request trace through FIFO, LRU, S3-FIFO, Belady, ours and an
    oracle prefetcher at caches of 0.1%, 1% and 10% of the footprint; write JSON and plots."""
    from prefetch.replay import engine as replay  # lazy: numba, ~0.15 s
    from prefetch.replay import real_sizes

    overrides: dict[str, object] = {}
    if world_config is not None:
        if not world_config.exists():
            raise typer.BadParameter(f"{world_config} does not exist", param_hint="--world-config")
        overrides.update(yaml.safe_load(world_config.read_text()) or {})
    if users is not None:
        overrides["users"] = users
    if days is not None:
        overrides["days"] = days
    try:
        config = replay.replay_config(seed, **overrides)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--world-config") from exc
    with console.status("replaying") as status:
        out = replay.run(
            config, budget_frac=budget, reference=not no_reference, real_photos=real_photos,
            sizes_cache=real_sizes.cache_file(Settings()),
            progress=status.update,
        )  # fmt: skip
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(out, indent=2))
    pngs = plot(out, json_out.with_suffix(""))
    title = f"seed {seed}: 1% cache, budget {budget:.0%} of demand bytes"
    console.print(figures_table(title, {k: out.get(k) for k in replay.HEADLINE_KEYS}))
    console.print(f"wrote {json_out} and {', '.join(str(p) for p in pngs)}")


@prefetch_app.command("ahead")
def ahead_cmd(
    window_min: Annotated[
        int, typer.Option(min=1, max=1440, help="The coming window users are picked for (min).")
    ] = 30,
    max_users: Annotated[
        int | None, typer.Option(min=1, help="Most users warmed, highest share first.")
    ] = None,
    days: Annotated[int, typer.Option(min=1, help="Past days whose same window is read.")] = 7,
    min_share: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Least share of those days the user was active."),
    ] = 0.3,
    timeout_s: Annotated[float, typer.Option(min=0.1, help="Limit on one feed request.")] = 10.0,
    every_min: Annotated[
        float | None,
        typer.Option(
            min=0.1,
            help="Run now and then every this many minutes (APScheduler) until interrupted; "
            "a run still going when the next is due makes that one skipped.",
        ),
    ] = None,
) -> None:
    """Warm the first page of the users likely to open the app in the coming window: the
    running service ranks and caches it, the edge gets its media (see prefetch/ahead.py)."""
    from prefetch import ahead  # lazy: the redis and Cassandra clients, ~0.15 s

    args = (window_min, max_users, days, min_share, timeout_s)
    if every_min is not None:
        console.print(f"every {every_min:g} min; Ctrl-C stops")
        with contextlib.suppress(KeyboardInterrupt, SystemExit):
            ahead.schedule(lambda: _ahead_once(*args), every_min * 60.0)
        return
    if not _ahead_once(*args):
        raise typer.Exit(code=1)


def _ahead_once(
    window_min: int, max_users: int | None, days: int, min_share: float, timeout_s: float
) -> bool:
    """One run, its summary printed; False when a feed request or a warm failed."""
    from prefetch import ahead  # lazy: the redis and Cassandra clients, ~0.15 s

    cfg = ahead.AheadConfig(
        window_min=window_min,
        days=days,
        min_share=min_share,
        max_users=max_users,
        feed_timeout_s=timeout_s,
    )
    out = ahead.run(Settings(), cfg, progress=True, report=console.print)
    table = Table(title=f"ahead of {out.window_start:%H:%M} UTC + {out.window_min} min")
    table.add_column("")
    table.add_column("count", justify="right")
    for name in (
        "users_scanned",
        "users_picked",
        "pages_warmed",
        "objects_planned",
        "objects_warmed",
        "objects_refreshed",
        "feed_failures",
        "warm_failures",
    ):
        table.add_row(name.replace("_", " "), str(getattr(out, name)))
    table.add_row("seconds", f"{out.seconds:.1f}")
    console.print(table)
    return not (out.feed_failures or out.warm_failures)


@prefetch_app.command("switch")
def switch_cmd(
    state: Annotated[str, typer.Argument(help="on or off")],
) -> None:
    """Turn the service's prefetch on or off live, on every replica, without a redeploy (within
    a second). FEEDCAST_PREFETCH_ENABLED=false still wins over `on`."""
    from core import cache  # lazy: the redis client, ~0.1 s

    if state not in ("on", "off"):
        raise typer.BadParameter("on or off", param_hint="STATE")
    s = Settings()
    r = cache.client(s)
    try:
        if state == "off":
            r.set(cache.prefetch_switch_key(s), "off")
        else:
            r.delete(cache.prefetch_switch_key(s))
    finally:
        r.close()
    console.print(f"prefetch {state}")
