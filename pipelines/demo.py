"""`make demo`: the whole feed loop on the local stack, narrated."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pandas as pd
import ray
from rich.console import Console
from rich.table import Table

from core import constants as C
from core.db import connect
from core.settings import DEV_API_KEY, Settings
from core.statements import Statements
from pipelines import contact_sheet, steps, world_media
from pipelines.render import feed_table, metrics_table
from prefetch.replay import live
from prefetch.replay.live import LiveConfig
from serving.deploy import deploy
from serving.metrics import prefetch_counters, scrape_targets
from simulator.config import WorldConfig
from simulator.writer import CASSANDRA_LAYOUT
from stack import local, nginx, ray_head


@contextmanager
def _step(console: Console, title: str) -> Iterator[None]:
    console.rule(f"[bold]{title}")
    t0 = time.perf_counter()
    yield
    console.print(f"[dim]{title}: {time.perf_counter() - t0:.1f}s[/]")


def _reusable_world(settings: Settings, config: WorldConfig) -> bool:
    """An existing world of the same shape generated within the last day is reused."""
    manifest = settings.world_dir / "manifest.json"
    if not manifest.exists():
        return False
    written = json.loads(manifest.read_text())
    old = written["config"]
    same = all(old[k] == getattr(config, k) for k in ("users", "days", "seed"))
    fresh = datetime.fromisoformat(old["end"]) > datetime.now(UTC) - timedelta(hours=20)
    current = written.get("cassandra_layout") == CASSANDRA_LAYOUT  # v6: read tables filled
    return same and fresh and current


# 40 users, 6 scrolling at once, 0.2 s per item: ~15 s a run, under the default rate limit.
LIVE = LiveConfig(users=40, seed=0, concurrency=6, dwell_s=0.2)


def live_check(settings: Settings, users: list[int], url: str) -> Table:
    """Both runs of the live check against the demo's edge (restarted cold before each)."""

    def cold_edge() -> None:
        nginx.down(settings)
        nginx.up(settings)

    def counters() -> dict[str, float]:
        try:  # the node agent exports on its own period: the latest it has
            return prefetch_counters(scrape_targets(ray.nodes()))
        except Exception:  # a narration figure, not worth failing the demo for
            return {}

    result = live.run(settings, users, cold_edge, LIVE, base_url=url, counters=counters)
    return live.table(result)


def _page(url: str, user_id: int, params: dict[str, Any]) -> dict[str, Any]:
    r = httpx.get(
        f"{url}/v1/feed/{user_id}", params=params, headers={"X-API-Key": DEV_API_KEY}, timeout=10
    )
    r.raise_for_status()
    page: dict[str, Any] = r.json()
    return page


def _render_first_pages(settings: Settings, url: str, readers: list[int], console: Console) -> int:
    """Render the photo posts of the readers' first pages (and of the first reader's second
    page), wait until the service draws them, and return the reader whose first page has the
    most photos (the contact sheet's)."""
    pages = {u: _page(url, u, {"limit": 10}) for u in readers}
    posts = [i["post_id"] for p in pages.values() for i in p["items"]]
    if pages[readers[0]]["next_cursor"]:
        nxt = _page(url, readers[0], {"limit": 10, "cursor": pages[readers[0]]["next_cursor"]})
        posts += [i["post_id"] for i in nxt["items"]]
    cluster, session = connect(settings)
    try:
        done = world_media.render_posts(settings, session, Statements(session, settings), posts)
    finally:
        cluster.shutdown()
    console.print(
        f"{done.posts} photos rendered ({done.renditions} renditions, "
        f"{done.bytes / 1e6:.1f} MB) in {done.seconds:.1f}s; {done.skipped} posts left as they "
        "were (video keeps simulated media)"
    )
    best = max(readers, key=lambda u: sum(i["media_kind"] == "photo" for i in pages[u]["items"]))
    deadline = time.monotonic() + 2 * settings.takedown_refresh_s + 15
    while time.monotonic() < deadline:  # the replicas notice the new media within a refresh
        if any("/media/r/" in r["url"] for i in _page(url, best, {"limit": 10})["items"]
               for r in i["renditions"]):  # fmt: skip
            break
        time.sleep(1.0)
    return int(best)


def run(settings: Settings, *, users: int, seed: int, console: Console) -> None:
    started = time.perf_counter()
    with _step(console, "1/8 local stack (Cassandra, Redis, MLflow)"):
        local.up(settings, report=console.print)
    config = WorldConfig(users=users, seed=seed)
    with _step(console, f"2/8 world: {users} users, {config.days} days, seed {seed}"):
        if _reusable_world(settings, config):
            console.print(
                f"reusing the world under {settings.world_dir} "
                "(`feedcast world generate --replace` makes a new one)"
            )
        else:
            _, summary = steps.generate_world(settings, config, replace=True, progress=True)
            console.print(summary.rows)
    with _step(console, "3/8 features: Feast apply + materialize to Redis"):
        console.print(steps.features_apply(settings))
        steps.features_materialize(settings)
    with _step(console, "4/8 train light + heavy rankers, judge them, register @champion"):
        result = steps.train(settings, alias=settings.model_alias, progress=True)
        console.print(
            f"{result.light.name}/{result.light.version} and "
            f"{result.heavy.name}/{result.heavy.version} are @{settings.model_alias}"
        )
    with _step(console, "5/8 serve on Ray Serve"):
        console.print(f"ray        {ray_head.up(settings)}")
        url = deploy(settings, address=ray_head.address(settings))
    imp = pd.read_parquet(settings.world_dir / "impressions.parquet", columns=[C.USER_ID])
    readers = imp[C.USER_ID].value_counts().index[:3].tolist()
    with _step(console, "6/8 photos: render the posts the readers' first pages show"):
        sheet_reader = _render_first_pages(settings, url, readers, console)
    with _step(console, "7/8 ranked feeds from the running service"):
        for n, user_id in enumerate(readers):
            cursor = None
            for _ in range(2 if n == 0 else 1):  # the first reader scrolls on, by cursor
                params: dict[str, Any] = {"limit": 10} | ({"cursor": cursor} if cursor else {})
                page = _page(url, user_id, params)
                console.print(feed_table(page))
                cursor = page["next_cursor"]
                if not cursor:
                    break
        console.print(metrics_table(result.metrics))
        sheet, drawn = contact_sheet.write(
            _page(url, sheet_reader, {"limit": 10}), settings.home / "demo" / "contact_sheet.html"
        )
        console.print(f"contact sheet of user {sheet_reader}'s first page ({drawn} photos "
                      f"through the edge): [bold]{sheet}[/]")  # fmt: skip
    with _step(console, "8/8 live check: the same scrolling through the edge, prefetch off vs on"):
        sample = imp[C.USER_ID].value_counts().index[: LIVE.users].tolist()
        console.print(live_check(settings, sample, url))
    console.rule("[bold green]feedcast is running")
    console.print(f"demo took {time.perf_counter() - started:.0f}s")
    console.print(f"feed API : {url}/v1/feed/<user_id>?limit=20  (header X-API-Key)")
    console.print(f"  e.g.   : curl -H 'X-API-Key: {DEV_API_KEY}' '{url}/v1/feed/1?limit=5'")
    console.print(f"health   : {url}/healthz    MLflow UI: {settings.mlflow_tracking_uri}")
    console.print("stop it  : make down   (= feedcast stack down: stops exactly what was started)")
