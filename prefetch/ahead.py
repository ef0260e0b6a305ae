"""Ahead-of-session prefetch: warm the first page of the users who will probably open the app soon.

Run by ``feedcast prefetch ahead`` (or a scheduler: :func:`run` returns an :class:`AheadSummary`),
a few minutes before each window, against the running feed service.

**Who is picked.** A user is likely to open the app in the coming window ``[now, now + W)`` when
they were about at that time of day before: for each of the past ``days`` days, the user counts
as *active* on that day if Cassandra holds a page served to them (``impressions_by_user``) or an
event of theirs (``interactions_by_user``) in the same clock window of that day. The user's
*share* is active days / ``days``; users with share ≥ ``min_share`` are picked, highest share
first (ties: lower user id), at most ``max_users``. Habit by hour of day is the strongest
predictor of a session start there is, and it needs no model: one bounded range read per
user, day and table (``LIMIT 1``).

**What is warmed.** The user's first page, computed by the service itself (``GET
/v1/feed/{user}`` with the API key and a timeout): serving it caches the page and writes the
later pages to Redis (the serving hook). The job then warms the page's media at the edge
synchronously, from the top: the app has not loaded even the first screen yet, so the plan
starts at position 0 (``first_screen = 0``) and reaches ``prefetch_lookahead`` items further,
each object kept when its probability of use clears ``prefetch_threshold``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.interval import IntervalTrigger
from cassandra.cluster import Session
from cassandra.concurrent import execute_concurrent_with_args
from tqdm import tqdm

from core import cache
from core.db import connect
from core.settings import DEV_API_KEY, Settings
from core.statements import Statements
from core.time import day_bucket
from media.renditions import PATH_PREFIX
from prefetch.pages import MediaCache, plan_config, plan_items, read_continuation
from prefetch.warm import EdgeWarmer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AheadConfig:
    window_min: int = 30  # the coming window users are picked for
    days: int = 7  # past days whose same window is looked at
    min_share: float = 0.3  # least share of those days with activity in the window
    max_users: int | None = None  # most users warmed (highest share first)
    feed_timeout_s: float = 10.0  # limit on one feed request
    concurrency: int = 4  # feed requests in flight at once (mind the key's rate limit)
    limit: int | None = None  # items per page (default: the service's)

    def __post_init__(self) -> None:
        if not 0 < self.window_min <= 24 * 60 or self.days < 1:
            raise ValueError("window_min must be in (0, 1440] and days ≥ 1")
        if not 0.0 <= self.min_share <= 1.0:
            raise ValueError(f"min_share must be in [0, 1], got {self.min_share}")


@dataclass
class AheadSummary:
    """What one run did."""

    window_start: datetime
    window_min: int
    users_scanned: int = 0
    users_picked: int = 0
    pages_warmed: int = 0  # first pages the service computed (and so cached) for a picked user
    objects_planned: int = 0  # objects to fetch into the edge
    objects_warmed: int = 0  # of those: stored at the edge by this run, or already there
    objects_refreshed: int = 0  # likely but uncertain objects refreshed (HEAD, never fetched)
    feed_failures: int = 0
    warm_failures: int = 0
    seconds: float = 0.0
    picked: list[tuple[int, float]] = field(default_factory=list)  # (user, share)


def windows(now: datetime, window_min: int, days: int) -> list[tuple[int, int, datetime, datetime]]:
    """(past day k, day bucket, start, end) of the same clock window on each of the past
    ``days`` days; a window across midnight is two ranges, one per day partition."""
    out = []
    for k in range(1, days + 1):
        start = now - timedelta(days=k)
        end = start + timedelta(minutes=window_min)
        cut = datetime.fromtimestamp((day_bucket(start) + 1) * 86_400, UTC)
        if end <= cut:
            out.append((k, day_bucket(start), start, end))
        else:
            out += [(k, day_bucket(start), start, cut), (k, day_bucket(cut), cut, end)]
    return out


def shares(
    session: Session,
    stmts: Statements,
    users: list[int],
    now: datetime,
    cfg: AheadConfig,
    *,
    progress: bool = False,
) -> dict[int, float]:
    """Each user's share of the past ``cfg.days`` days with activity in the coming window."""
    ranges = [(u, w) for u in users for w in windows(now, cfg.window_min, cfg.days)]
    args = [(u, day, start, end) for u, (_, day, start, end) in ranges]
    active: dict[int, set[int]] = {u: set() for u in users}
    for stmt in (stmts.served_between, stmts.engaged_between):
        results = execute_concurrent_with_args(
            session, stmt, args, concurrency=64, raise_on_first_error=True, results_generator=True
        )
        it = tqdm(results, total=len(args), desc="activity", unit="read", disable=not progress)
        for (u, (k, *_)), (_, rows) in zip(ranges, it, strict=True):
            if rows.one() is not None:
                active[u].add(k)
    return {u: len(days) / cfg.days for u, days in active.items()}


def pick(shares_by_user: dict[int, float], cfg: AheadConfig) -> list[tuple[int, float]]:
    """Users at or above ``min_share``, highest share first (ties: lower id), capped."""
    ranked = sorted(
        ((u, s) for u, s in shares_by_user.items() if s >= cfg.min_share and s > 0),
        key=lambda us: (-us[1], us[0]),
    )
    return ranked[: cfg.max_users] if cfg.max_users is not None else ranked


def run(
    settings: Settings,
    cfg: AheadConfig | None = None,
    *,
    base_url: str | None = None,
    api_key: str = DEV_API_KEY,
    now: datetime | None = None,
    progress: bool = False,
    report: Callable[[str], None] = log.info,
) -> AheadSummary:
    """Pick the users of the coming window and warm their first page (service, Redis, edge)."""
    cfg = cfg or AheadConfig()
    s = settings
    now = now or datetime.now(UTC)
    started = time.perf_counter()
    out = AheadSummary(window_start=now, window_min=cfg.window_min)
    cluster, session = connect(s)
    try:
        stmts = Statements(session, s)
        users = [int(r.user_id) for r in session.execute(stmts.all_users)]
        out.users_scanned = len(users)
        out.picked = pick(shares(session, stmts, users, now, cfg, progress=progress), cfg)
        out.users_picked = len(out.picked)
        report(f"{out.users_picked} of {out.users_scanned} users picked for the window")
        if out.picked:
            _warm(s, cfg, out, MediaCache(s, lambda: (session, stmts)), base_url, api_key, progress)
    finally:
        cluster.shutdown()
    out.seconds = time.perf_counter() - started
    return out


def _warm(
    s: Settings,
    cfg: AheadConfig,
    out: AheadSummary,
    media: MediaCache,
    base_url: str | None,
    api_key: str,
    progress: bool,
) -> None:
    url = (base_url or s.serve_url).rstrip("/")
    plan_cfg = replace(plan_config(s), first_screen=0)
    params = {"limit": cfg.limit} if cfg.limit else {}
    redis = cache.client(s)
    with (
        httpx.Client(headers={"X-API-Key": api_key}, timeout=cfg.feed_timeout_s) as http,
        EdgeWarmer(s) as edge,
        ThreadPoolExecutor(cfg.concurrency, thread_name_prefix="ahead") as pool,
    ):

        def one(user: int) -> tuple[bool, int, int, int, int]:
            """(page served, fetches planned, warmed, refreshes, failed) for one user."""
            try:
                r = http.get(f"{url}/v1/feed/{user}", params=params)
                r.raise_for_status()
                page = r.json()["items"]
                ids = [int(i["post_id"]) for i in page]
                known = media.get(ids)
            except Exception as exc:  # one user's failure is counted, the run goes on
                log.warning("ahead: no page for user %s: %s", user, exc)
                return False, 0, 0, 0, 0
            items = [cache.CachedItem(p, 0, 0, 0.0, 0.0, *known.get(p, ("", 0))) for p in ids]
            c = read_continuation(redis, s, user)
            actions = plan_items(s, items, c, at=None, cfg=plan_cfg, stored=stored_first(page))
            done = edge.warm(a.path for a in actions)
            fetches = sum(a.fetch for a in actions)
            refreshes = done.refreshed + done.absent
            return True, fetches, done.warmed + done.already, refreshes, done.failed

        users = [u for u, _ in out.picked]
        for ok, planned, warmed, refreshed, failed in tqdm(
            pool.map(one, users), total=len(users), desc="warm", unit="user", disable=not progress
        ):
            out.pages_warmed += ok
            out.feed_failures += not ok
            out.objects_planned += planned
            out.objects_warmed += warmed
            out.objects_refreshed += refreshed
            out.warm_failures += failed
    redis.close()


def stored_first(items: list[dict[str, Any]]) -> dict[int, tuple[str, int]]:
    """post → (edge path, bytes) of the first rendition a client draws, for the page's items
    whose media the upload tier stored (their URLs under ``PATH_PREFIX``): the real object and
    size, as the feed's own warming plans them (``serving/feed.py``)."""
    out: dict[int, tuple[str, int]] = {}
    for item in items:
        first = (item.get("renditions") or [None])[0]
        if first is None:
            continue
        path = urlsplit(str(first["url"])).path
        if path.startswith(PATH_PREFIX):
            out[int(item["post_id"])] = (path, int(first["bytes"]))
    return out


def schedule(job: Callable[[], object], every_s: float, *, blocking: bool = True) -> Any:
    """Run ``job`` now and then every ``every_s`` seconds with APScheduler (not a sleep loop).

    One run at a time: a run still going when the next is due makes that one skipped
    (``max_instances=1``), and runs missed while the process was busy collapse into one
    (``coalesce``). ``blocking=False`` returns the started ``BackgroundScheduler`` (call
    ``shutdown()``); ``blocking=True`` runs until interrupted.
    """
    if every_s <= 0:
        raise ValueError(f"every_s must be positive, got {every_s}")
    sched = BlockingScheduler(timezone=UTC) if blocking else BackgroundScheduler(timezone=UTC)
    sched.add_job(
        job,
        IntervalTrigger(seconds=every_s, timezone=UTC),
        next_run_time=datetime.now(UTC),
        max_instances=1,
        coalesce=True,
        id="prefetch-ahead",
    )
    sched.start()
    return sched
