"""``feedcast prefetch ...``: trace replay of cache policies (and the prefetch jobs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

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
) -> None:
    """Replay the world's media request trace through FIFO, LRU, S3-FIFO, Belady, ours and an
    oracle prefetcher at caches of 0.1%, 1% and 10% of the footprint; write JSON and plots."""
    import yaml

    from prefetch import replay
    from prefetch.report import plot

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
            config, budget_frac=budget, reference=not no_reference, progress=status.update
        )
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(out, indent=2))
    pngs = plot(out, json_out.with_suffix(""))
    table = Table(title=f"seed {seed}: 1% cache, budget {budget:.0%} of demand bytes")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key in replay.HEADLINE_KEYS:
        v = out.get(key)
        table.add_row(key, f"{v:.4f}" if isinstance(v, float) else str(v))
    console.print(table)
    console.print(f"wrote {json_out} and {', '.join(str(p) for p in pngs)}")
