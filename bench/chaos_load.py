"""Open-loop load for the chaos suite: requests leave on a fixed schedule whatever the answers
do (a closed loop would slow down with the service and hide its failures).

:class:`Load` runs in a thread of its own (an asyncio loop) and records every feed request —
when it was due, its status, latency, degraded flags, model version — and every engagement event
it posted and whether the service acknowledged it (2xx). Scenarios read the records by time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from bench.rawhttp import RawClient
from core.settings import DEV_API_KEY

TIMEOUT_S = 5.0
RETRY_BACKOFF_S = 0.3  # mean pause before the one retry (jittered 0.5-1.5x) ...
RETRY_AFTER_CAP_S = 2.0  # ... or the answer's Retry-After, up to this
NICE = -10


@dataclass
class Call:
    at: float  # monotonic time it was due
    status: int  # 0: no answer (timeout, connection refused)
    latency_s: float
    degraded: tuple[str, ...] = ()
    version: str = ""
    retried: bool = False  # answered by the one client retry
    lag_s: float = 0.0  # how late the load generator sent it (its own event loop's delay)
    first_status: int = 0  # the first try's status (differs from status when retried)
    first_error: str = ""  # a 5xx first try's body, its start (who answered, and why)


@dataclass
class Event:
    event_id: str
    at: float
    status: int


@dataclass
class Load:
    base_url: str
    users: list[int]
    posts: list[int]
    rate: float  # feed requests per second
    event_rate: float = 0.0  # events per second
    retry: bool = False  # retry a failed request once (what a client library would do)
    api_key: str = DEV_API_KEY
    calls: list[Call] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def set_rate(self, rate: float) -> None:
        self.rate = rate

    def start(self) -> Load:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        # The generator shares the 2 cores with everything it loads: at 4x capacity it fell
        # 22 s behind its own schedule and measured itself. This thread (Linux niceness is per
        # thread) gets the CPU first; the servers keep theirs. Without the right to, as is.
        with contextlib.suppress(PermissionError, OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
        asyncio.run(self._main())

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=TIMEOUT_S * 3)

    def window(self, start: float, end: float) -> list[Call]:
        return [c for c in self.calls if start <= c.at < end]

    async def _main(self) -> None:
        # Not httpx: at 4x capacity its CPU per request made the generator measure its own
        # event loop (a 503 nginx answered in 0.7 ms read as 2.2 s). See bench/rawhttp.py.
        async with RawClient(
            self.base_url, headers={"X-API-Key": self.api_key}, timeout_s=TIMEOUT_S, max_idle=256
        ) as client:
            tasks: set[asyncio.Task[None]] = set()
            rng = np.random.default_rng(0)
            next_feed = next_event = time.monotonic()
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_feed and self.rate > 0:
                    user = int(self.users[rng.integers(len(self.users))])
                    t = asyncio.create_task(self._feed(client, user, next_feed))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
                    next_feed += 1.0 / self.rate
                    continue
                if self.event_rate > 0 and now >= next_event:
                    t = asyncio.create_task(self._event(client, rng, next_event))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
                    next_event += 1.0 / self.event_rate
                    continue
                wake = min(next_feed, next_event if self.event_rate > 0 else next_feed)
                await asyncio.sleep(max(0.0, min(wake - now, 0.05)))
            if tasks:
                await asyncio.wait(tasks, timeout=TIMEOUT_S * 2)

    async def _get(
        self, client: RawClient, user: int
    ) -> tuple[int, dict, float, float | None, str]:
        """(status, body if 200, latency, the Retry-After it asked for in seconds, the start of
        a 5xx body)."""
        t0 = time.monotonic()
        try:
            r = await client.get(f"/v1/feed/{user}", params={"limit": 10})
            body = r.json() if r.status == 200 else {}
            after = r.headers.get("retry-after", "")
            wait = float(after) if after.replace(".", "", 1).isdigit() else None
            error = r.body[:160].decode("utf-8", "replace") if r.status >= 500 else ""
            return r.status, body, time.monotonic() - t0, wait, error
        except Exception:  # no answer of any kind (timeout, refused, reset, too many files)
            return 0, {}, time.monotonic() - t0, None, ""

    async def _feed(self, client: RawClient, user: int, due: float) -> None:
        lag = time.monotonic() - due
        status, body, latency, after, error = await self._get(client, user)
        first, retried = status, False
        if self.retry and status not in (200, 404, 429):
            # As a client library would: after the Retry-After the service asked for (a shed
            # 503 says 1 s; capped), else a jittered pause, so the retry does not meet the same
            # state (a dead replica still in the proxy's table, a full gate) as the first try.
            if after is not None:  # no sooner than asked, spread over the next half of it
                pause = min(after, RETRY_AFTER_CAP_S) * (1.0 + 0.5 * random.random())
            else:
                pause = RETRY_BACKOFF_S * (0.5 + random.random())
            await asyncio.sleep(pause)
            status, body, latency, _, _ = await self._get(client, user)
            retried = True
        self.calls.append(
            Call(
                due,
                status,
                latency,
                tuple(body.get("degraded") or ()),
                str(body.get("model_version", "")),
                retried,
                lag,
                first,
                error,
            )
        )

    async def _event(self, client: RawClient, rng: np.random.Generator, due: float) -> None:
        event_id = f"chaos-{uuid.uuid4().hex}"
        payload = {
            "events": [
                {
                    "event_id": event_id,
                    "user_id": int(self.users[rng.integers(len(self.users))]),
                    "post_id": int(self.posts[rng.integers(len(self.posts))]),
                    "kind": "like",
                    "ts": datetime.now(UTC).isoformat(),
                }
            ]
        }
        try:
            r = await client.post("/v1/events", json=payload)
            status = r.status
        except Exception:  # not acknowledged, whatever the reason
            status = 0
        self.events.append(Event(event_id, due, status))


def capacity(url: str, users: list[int], seconds: float = 20, concurrency: int = 8) -> float:
    """Requests per second the feed sustains with ``concurrency`` callers (closed loop): the
    suite's B is half of it."""

    async def main() -> int:
        done = 0
        stop = time.monotonic() + seconds

        async def caller(client: RawClient, k: int) -> None:
            nonlocal done
            i = k
            while time.monotonic() < stop:
                r = await client.get(f"/v1/feed/{users[i % len(users)]}", params={"limit": 10})
                done += r.status == 200
                i += concurrency

        # The same lean client as the load (bench/rawhttp.py): its CPU is not the service's.
        async with RawClient(url, headers={"X-API-Key": DEV_API_KEY}, timeout_s=10) as client:
            await asyncio.gather(*(caller(client, k) for k in range(concurrency)))
        return done

    return asyncio.run(main()) / seconds


def percentile_ms(calls: list[Call], q: float) -> float:
    lat = [c.latency_s for c in calls]
    return float(np.percentile(lat, q) * 1000) if lat else float("nan")
