"""The live check: the same simulated scrolling twice through the real edge, prefetch off then on.

For each user of a sample, a seeded script says how deep they scroll (geometric: they go on to
the next item with their own continuation rate, drawn as the simulator's trace draws it,
Beta(9, 1): mean 0.9), how long each item stays on screen (exponential,
mean ``dwell_s``: compressed time) and whether each video plays long enough to stream. Each
user fetches their feed from the running service as an app does, page by page with the
response's ``next_cursor`` (up to ``pages`` pages of ``limit``), and walks it: per item an
impression event (with its slot in the page, so the service's rolling prefetch can follow),
then the media the app loads from the item's renditions, requested through the edge and timed
— a photo's ``full``, a video's ``thumb`` and, if it plays on, its ``full`` after the dwell.

The two runs differ only in the service's live prefetch switch (``core.cache.
prefetch_switch_key``), and each starts from a cold edge (``cold_edge`` restarts it: the edge
empties its cache at start). The result is the edge hit ratio (``X-Cache-Status: HIT`` of the
users' own media requests) and the media latency of each run. The off run's impressions count in
the users' scrolling history, so the on run plans with continuation rates learned from it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import httpx
import numpy as np
from rich.table import Table

from core import cache
from core.settings import DEV_API_KEY, Settings
from media import objects as media

log = logging.getLogger(__name__)
SWITCH_SETTLE_S = 1.5  # replicas re-read the live switch at least once a second


@dataclass(frozen=True)
class LiveConfig:
    users: int = 40  # users in the sample (each scrolls once per run)
    seed: int = 0
    continue_beta: tuple[float, float] = (9.0, 1.0)  # users' continuation rates (mean 0.9)
    dwell_s: float = 0.2  # mean time an item stays on screen (compressed)
    p_video_full: float = 0.3  # a video plays long enough for its stream to be requested
    limit: int = 10  # items per page
    pages: int = 3  # most pages one user scrolls (cursor after cursor)
    concurrency: int = 4  # users scrolling at once (mind the API key's rate limit)
    timeout_s: float = 10.0  # limit on each request (feed, event, media)


@dataclass(frozen=True)
class Script:
    """One user's scroll, identical in both runs."""

    user_id: int
    depth: int  # items viewed (≥ 1), across pages
    dwell_s: list[float]  # per position in the session
    video_full: list[bool]  # per position in the session: a video there plays on


@dataclass
class RunStats:
    label: str
    feeds: int = 0
    feed_failures: int = 0
    events: int = 0
    event_failures: int = 0
    media: int = 0
    hits: int = 0
    media_failures: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, other: RunStats) -> None:
        for name in ("feeds", "feed_failures", "events", "event_failures", "media", "hits"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.media_failures += other.media_failures
        self.latencies_ms += other.latencies_ms

    @property
    def hit_ratio(self) -> float:
        return self.hits / self.media if self.media else 0.0

    def quantile_ms(self, q: float) -> float:
        return float(np.quantile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


@dataclass
class LiveResult:
    off: RunStats
    on: RunStats
    counters: dict[str, float] = field(default_factory=dict)  # the service's prefetch metrics


def scripts(users: Sequence[int], cfg: LiveConfig) -> list[Script]:
    """Each user's scroll, drawn from ``cfg.seed`` and the user id (same users, same scrolls)."""
    out = []
    for u in users:
        rng = np.random.default_rng([cfg.seed, u])
        c = rng.beta(*cfg.continue_beta)
        most = cfg.limit * cfg.pages
        depth = int(min(most, rng.geometric(1.0 - c)))
        dwell = np.clip(rng.exponential(cfg.dwell_s, most), cfg.dwell_s / 4, cfg.dwell_s * 4)
        full = rng.random(most) < cfg.p_video_full
        out.append(Script(u, depth, dwell.tolist(), full.tolist()))
    return out


class Scroller:
    """Plays scripts against the service and the edge, recording into one run's stats."""

    def __init__(self, s: Settings, cfg: LiveConfig, base_url: str) -> None:
        self.s, self.cfg = s, cfg
        self.api = httpx.Client(
            base_url=base_url, headers={"X-API-Key": DEV_API_KEY}, timeout=cfg.timeout_s
        )
        self.edge = httpx.Client(base_url=f"http://127.0.0.1:{s.edge_port}", timeout=cfg.timeout_s)

    def close(self) -> None:
        self.api.close()
        self.edge.close()

    def play(self, sc: Script) -> RunStats:
        """One user's scroll, page after page; its own stats (threads never share a counter)."""
        stats = RunStats("")
        k, cursor = 0, None
        while k < sc.depth:
            params: dict[str, Any] = {"limit": self.cfg.limit}
            if cursor:
                params["cursor"] = cursor
            try:
                r = self.api.get(f"/v1/feed/{sc.user_id}", params=params)
                r.raise_for_status()
                page = r.json()
            except Exception as exc:
                log.warning("live check: no feed page for %s: %s", sc.user_id, exc)
                stats.feed_failures += 1
                return stats
            stats.feeds += 1
            for item in page["items"][: sc.depth - k]:
                post = int(item["post_id"])
                self._impression(sc.user_id, post, int(item["position"]), stats)
                urls = {r["variant"]: r["url"] for r in item["renditions"]}
                video = item["media_kind"] == "video"
                variant = "thumb" if video else "full"
                self._get(urls.get(variant, media.path(post, variant)), stats)
                time.sleep(sc.dwell_s[k])
                if video and sc.video_full[k]:
                    self._get(urls.get("full", media.path(post, "full")), stats)
                k += 1
            cursor = page["next_cursor"]
            if not cursor or not page["items"]:
                break
        return stats

    def _impression(self, user: int, post: int, position: int, stats: RunStats) -> None:
        event = {
            "event_id": f"live-{uuid4().hex}",
            "user_id": user,
            "post_id": post,
            "kind": "impression",
            "ts": datetime.now(UTC).isoformat(),
            "position": position,
        }
        try:
            self.api.post("/v1/events", json={"events": [event]}).raise_for_status()
            stats.events += 1
        except httpx.HTTPError as exc:
            log.warning("live check: impression not sent: %s", exc)
            stats.event_failures += 1

    def _get(self, path: str, stats: RunStats) -> None:
        t = time.perf_counter()
        try:
            r = self.edge.get(path)
            ok = r.status_code == 200
        except httpx.HTTPError:
            ok = False
        stats.media += 1
        if not ok:
            stats.media_failures += 1
            return
        stats.latencies_ms.append((time.perf_counter() - t) * 1000)
        stats.hits += r.headers.get("x-cache-status", "").upper() == "HIT"


def run(
    settings: Settings,
    users: Sequence[int],
    cold_edge: Callable[[], None],
    cfg: LiveConfig | None = None,
    *,
    base_url: str | None = None,
    counters: Callable[[], dict[str, float]] | None = None,
) -> LiveResult:
    """Both runs (off, then on) over ``users``; leaves the live switch as it found it."""
    cfg = cfg or LiveConfig()
    s = settings
    plays = scripts(list(users)[: cfg.users], cfg)
    redis = cache.client(s)
    key = cache.prefetch_switch_key(s)
    before: Any = redis.get(key)
    scroller = Scroller(s, cfg, base_url or s.serve_url)
    runs = []
    try:
        for label, switch in (("off", "off"), ("on", "on")):
            redis.set(key, switch)
            time.sleep(SWITCH_SETTLE_S)
            cold_edge()
            stats = RunStats(label)
            t = time.perf_counter()
            with ThreadPoolExecutor(cfg.concurrency, thread_name_prefix=f"live-{label}") as pool:
                for one in pool.map(scroller.play, plays):
                    stats.add(one)
            stats.seconds = time.perf_counter() - t
            runs.append(stats)
    finally:
        if before is None:
            redis.delete(key)
        else:
            redis.set(key, before)
        redis.close()
        scroller.close()
    return LiveResult(runs[0], runs[1], counters() if counters else {})


def table(result: LiveResult) -> Table:
    """Off vs on: hit ratio, media latency, and what each run did."""
    t = Table(title="live check: simulated scrolling through the edge, prefetch off vs on")
    t.add_column("")
    for r in (result.off, result.on):
        t.add_column(f"prefetch {r.label}", justify="right")
    rows: list[tuple[str, Callable[[RunStats], str]]] = [
        ("edge hit ratio", lambda r: f"{r.hit_ratio:.1%}"),
        ("media p50 (ms)", lambda r: f"{r.quantile_ms(0.5):.1f}"),
        ("media p90 (ms)", lambda r: f"{r.quantile_ms(0.9):.1f}"),
        ("media requests", lambda r: str(r.media)),
        ("media failures", lambda r: str(r.media_failures)),
        ("feeds (failed)", lambda r: f"{r.feeds} ({r.feed_failures})"),
        ("impressions (failed)", lambda r: f"{r.events} ({r.event_failures})"),
        ("run seconds", lambda r: f"{r.seconds:.1f}"),
    ]
    for name, cell in rows:
        t.add_row(name, cell(result.off), cell(result.on))
    for name, value in sorted(result.counters.items()):  # the service's, since it started
        t.add_row(f"[dim]{name}[/]", "", f"{value:g}")
    return t
