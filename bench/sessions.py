"""Feed sessions under load: what a cursor's page costs, and what sessions do to capacity.

Run by ``bench/serve.py`` against its deployed feed (same world, same replicas), with the lean
raw HTTP client (``bench/rawhttp.py``) as the generator. Every figure is the machine's: busy
CPU time from ``/proc/stat`` over the window (every process: replicas, Ray, Cassandra, Redis,
the generator) divided by the requests answered 200.

- ``cpu_ms_per_request_page2``: open loop at 100 req/s (the rate of ``bench/serve.py``'s
  ``cpu_ms_per_request_noop``), each request the next page of a session opened before the
  window (``limit`` items per page, cursor after cursor: a session's next page is asked after
  its previous one answered);
- ``cpu_ms_per_request_ping_same_rate``: ``GET /v1/ping`` open loop at the same rate, just
  before: the same ingress, replica and guard (API key, rate limit in Redis), nothing else. At
  one rate the machine's fixed background costs both the same per request, so
  ``page2_minus_ping_ms`` is the page's own work (closed loops at their own rates are not:
  the ping's would spread the background over several times the requests);
- ``capacity_rps_first_page`` / ``capacity_rps_session_mix``: the highest offered rate,
  searched in 10 req/s steps, whose requests all answer 200 with p99 ≤ 250 ms (open loop).
  First pages: every request a first page (no cursor). Session mix: sessions arrive at random
  (Poisson) and each scrolls as the simulator's users do (``simulator.trace``): a hidden
  continuation rate c ~ Beta(9, 1) per user, a geometric number of items viewed, so
  ``ceil(depth / limit)`` pages (at most 50: what 500 candidates hold), the next one asked
  ``THINK_S`` after the previous answer; ``mean_pages_per_session`` is what the drawn sessions
  ask for. Sessions take a while to reach their depth, so a step's answered rate
  (``achieved_rps``) is counted over the second half of its window, and the capacity reported
  is the achieved rate of the highest step that passed, not its nominal offer.
"""

from __future__ import annotations

import asyncio
import collections
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.load import search
from bench.rawhttp import RawClient
from core.settings import DEV_API_KEY

LIMIT = 10  # items per page (an app's screenful or two)
P99_BAR_MS = 250.0
STEP_RPS = 10
WINDOW_S = 30.0  # arrivals per capacity step; the rate is counted over its second half
MAX_PAGES = 50  # a session holds at most feed_max_candidates (500) / LIMIT pages
CPU_WINDOW_S = 20.0
PAGE2_RPS = 100.0  # the rate of bench/serve.py's cpu_ms_per_request_noop
THINK_S = 0.5  # between a page's answer and the next page's request


@dataclass
class Window:
    started: list[float] = field(default_factory=list)  # request start times (monotonic)
    ok: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    degraded: int = 0

    def achieved_rps(self, t0: float) -> float:
        """Requests started in the second half of the arrival window, per second."""
        half = WINDOW_S / 2
        return sum(t0 + half <= t < t0 + WINDOW_S for t in self.started) / half

    def p99(self) -> float:
        return float(np.percentile(self.latencies_ms, 99)) if self.latencies_ms else math.inf


def depths(n: int, seed: int = 0) -> np.ndarray:
    """Items each of ``n`` sessions views: geometric with c ~ Beta(9, 1) (as simulator.trace)."""
    rng = np.random.default_rng(seed)
    c = rng.beta(9.0, 1.0, n)
    return np.asarray(rng.geometric(1.0 - c), dtype=np.int64)


def pages_wanted(depth: int, limit: int = LIMIT) -> int:
    return max(1, math.ceil(depth / limit))


async def open_sessions(client: RawClient, users: list[int], n: int) -> list[tuple[int, str]]:
    """Open ``n`` sessions (outside any window): (user, cursor of page 2)."""
    out = []
    for k in range(n):
        user = users[k % len(users)]
        r = await client.get(f"/v1/feed/{user}", {"limit": LIMIT})
        cursor = r.json().get("next_cursor") if r.status == 200 else None
        if cursor:
            out.append((user, cursor))
    return out


def scroller(
    opened: list[tuple[int, str]],
) -> tuple[Callable[[int], tuple[str, dict[str, Any]]], Callable[[int, dict[str, Any]], None]]:
    """An open loop's target and ``on_body`` that ask continued pages: request k takes the
    next queued (user, cursor), and each answer queues its own next cursor (a session's next
    page is asked after its previous one answered)."""
    queue = collections.deque(opened)
    asked: dict[int, int] = {}

    def page(k: int) -> tuple[str, dict[str, Any]]:
        user, cursor = queue.popleft() if queue else opened[k % len(opened)]
        asked[k] = user
        return f"/v1/feed/{user}", {"limit": LIMIT, "cursor": cursor}

    def then(k: int, body: dict[str, Any]) -> None:
        if body.get("next_cursor"):
            queue.append((asked[k], body["next_cursor"]))

    return page, then


async def cpu_page2(
    url: str, users: list[int], rate: float = PAGE2_RPS, seconds: float = CPU_WINDOW_S
) -> dict[str, Any]:
    """CPU per continued page against CPU per ping, both open loop at ``rate``, one after the
    other: at one rate the machine's fixed background (Ray, Cassandra, MLflow idling) costs
    both the same per request, so the difference is the page's own work."""
    from bench import load

    headers = {"X-API-Key": DEV_API_KEY}
    async with RawClient(url, headers, timeout_s=30) as c:
        opened = await open_sessions(c, users, int(rate * 2))
    page, then = scroller(opened)

    def ping(_: int) -> tuple[str, dict[str, Any]]:
        return "/v1/ping", {}

    pings = await load.open_loop(url, headers, ping, rate, seconds, is_page=False)
    await asyncio.sleep(2)
    pages = await load.open_loop(url, headers, page, rate, seconds, on_body=then)
    return {
        "cpu_ms_per_request_page2": pages.cpu_ms_per_request,
        "cpu_ms_per_request_ping_same_rate": pings.cpu_ms_per_request,
        "page2_minus_ping_ms": pages.cpu_ms_per_request - pings.cpu_ms_per_request,
        "page2_rps": rate,
        "page2_cpu_ms_by_group": {k: round(v, 3) for k, v in pages.cpu_ms_by_group.items()},
        "page2_errors": pages.errors,
        "page2_p99_ms": pages.quantile(99),
        "sessions_opened": len(opened),
        "continued_pages": pages.ok,
    }


async def _open_loop(
    url: str, rate: float, session: Any, arrivals_per_s: float
) -> tuple[Window, float]:
    """Sessions arriving (Poisson) at ``arrivals_per_s`` for WINDOW_S; each runs ``session``.
    The window and its start (monotonic)."""
    w = Window()
    rng = random.Random(int(rate * 1000))
    tasks = []
    async with RawClient(url, {"X-API-Key": DEV_API_KEY}, timeout_s=10, max_idle=256) as c:
        start = time.monotonic()
        t = 0.0
        k = 0
        while t < WINDOW_S:
            delay = start + t - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(session(c, k, w)))
            k += 1
            t += rng.expovariate(arrivals_per_s)
        await asyncio.gather(*tasks)
    return w, start


async def _get(c: RawClient, w: Window, path: str, params: dict[str, Any]) -> dict | None:
    w.started.append(time.monotonic())
    t = time.perf_counter()
    try:
        r = await c.get(path, params)
    except Exception:
        w.errors += 1
        return None
    w.latencies_ms.append((time.perf_counter() - t) * 1000)
    if r.status != 200:
        w.errors += 1
        return None
    body = r.json()
    w.ok += 1
    w.degraded += bool(body["degraded"])
    return body


async def capacity(
    url: str, users: list[int], mix: bool, *, start: int = STEP_RPS, most: int = 400
) -> dict[str, Any]:
    """Highest offered req/s (10 req/s steps) answered with no error and p99 ≤ 250 ms; the
    capacity reported is the achieved rate of the best passing step."""
    wanted = [min(pages_wanted(int(d)), MAX_PAGES) for d in depths(4096)]
    mean_pages = float(np.mean(wanted)) if mix else 1.0

    async def session(c: RawClient, k: int, w: Window) -> None:
        user = users[k % len(users)]
        body = await _get(c, w, f"/v1/feed/{user}", {"limit": LIMIT})
        for _ in range(wanted[k % len(wanted)] - 1 if mix else 0):
            if not body or not body["next_cursor"]:
                return
            await asyncio.sleep(THINK_S)
            body = await _get(
                c, w, f"/v1/feed/{user}", {"limit": LIMIT, "cursor": body["next_cursor"]}
            )

    best, steps = 0.0, []
    tried: dict[int, tuple[bool, float]] = {}

    async def ok(rate: int) -> bool:
        nonlocal best
        if rate not in tried:
            w, t0 = await _open_loop(url, rate, session, rate / mean_pages)
            n, achieved = w.ok + w.errors, w.achieved_rps(t0)
            steps.append(
                {"offered_rps": rate, "achieved_rps": achieved, "requests": n, "errors": w.errors}
                | {"p99_ms": w.p99(), "degraded": w.degraded}
            )
            print(
                f"{'mix' if mix else 'first'} @ {rate} rps: achieved {achieved:.1f} rps, "
                f"p99 {w.p99():.0f} ms, errors {w.errors}/{n}",
                flush=True,
            )
            tried[rate] = (not w.errors and w.p99() <= P99_BAR_MS, achieved)
            await asyncio.sleep(3)  # let queues drain between steps
        passed, achieved = tried[rate]
        if passed:
            best = max(best, achieved)
        return passed

    await search(ok, step=STEP_RPS, start=start, most=most)
    return {"capacity_rps": best, "mean_pages_per_session": mean_pages, "steps": steps}


def run(url: str, users: list[int]) -> dict[str, Any]:
    """Every figure above, in one run on the deployed feed at ``url``."""
    cpu = asyncio.run(cpu_page2(url, users))
    print(
        f"CPU per request: continued page {cpu['cpu_ms_per_request_page2']:.2f} ms, "
        f"ping {cpu['cpu_ms_per_request_ping_same_rate']:.2f} ms "
        f"(both at {cpu['page2_rps']:g} req/s)",
        flush=True,
    )
    first = asyncio.run(capacity(url, users, mix=False))
    mixed = asyncio.run(capacity(url, users, mix=True))
    return cpu | {
        "capacity_rps_first_page": first["capacity_rps"],
        "capacity_rps_session_mix": mixed["capacity_rps"],
        "session_mix_vs_first_page": mixed["capacity_rps"] / max(first["capacity_rps"], 1),
        "mean_pages_per_session": mixed["mean_pages_per_session"],
        "session_limit": LIMIT,
        "session_runs": {"first_page": first["steps"], "session_mix": mixed["steps"]},
    }
