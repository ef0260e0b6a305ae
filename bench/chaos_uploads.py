"""Chaos scenario ``uploads_2x``: photo uploads at twice the upload tier's capacity for 60 s,
beside the feed's traffic at B. Bars (issue 22): no accepted upload is lost (every 202 ends
``ready``), and the feed's p99 during the burst stays within 1.5x its p99 just before it, in
the same run (the machine is noisy: side by side, not against an older figure).

The tier's capacity is measured here, as deployed: the median time from an upload's 202 to
``ready`` with the tier idle (one worker's job, the quality search included), times the workers
it may have (``upload_max_replicas``). Each upload is a different crop (different bytes: a new
post).
"""

from __future__ import annotations

import multiprocessing
import re
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.chaos_load import percentile_ms
from bench.load import CpuMeter
from core.settings import DEV_API_KEY
from media import samples

API = {"X-API-Key": DEV_API_KEY}
BURST_S = 60.0
REF_S = 60.0


def job_seconds(url: str, authors: list[int], n: int = 4) -> float:
    """Median seconds from an upload's 202 to ``ready``, one upload at a time on the idle tier:
    what one worker takes per job as deployed (nice, beside the feed), handover included."""
    times = []
    with httpx.Client(headers=API, timeout=30) as client:
        for k in range(n):
            data = samples.photo_for(7_000_000 + k + int(time.time()) * 1000)
            r = client.post(
                f"{url}/v1/uploads",
                files={"file": ("photo.jpg", data, "image/jpeg")},
                data={"author_id": str(authors[k % len(authors)])},
            )
            r.raise_for_status()
            t0, post = time.monotonic(), r.json()["post_id"]
            while client.get(f"{url}/v1/uploads/{post}").json()["status"] == "processing":
                if time.monotonic() - t0 > 120:
                    raise TimeoutError(f"upload {post} not processed in 120 s")
                time.sleep(0.05)
            times.append(time.monotonic() - t0)
    return statistics.median(times)


class Uploader:
    """Open-loop uploads at ``rate`` per second of the given photos, from a pool of senders.
    Runs in a process of its own (:func:`burst`): in the feed load generator's process its
    threads would delay that generator's event loop and show as feed latency."""

    def __init__(self, url: str, authors: list[int], rate: float, photos: list[bytes]) -> None:
        self.url, self.authors, self.rate, self.photos = url, authors, rate, photos
        self.statuses: list[int] = []
        self.accepted: list[int] = []
        self.refusals: Counter[str] = Counter()  # status and the body's start, for reading
        self._lock = threading.Lock()

    def _one(self, k: int) -> None:
        author = self.authors[k % len(self.authors)]
        try:
            r = httpx.post(
                f"{self.url}/v1/uploads",
                headers=API,
                files={"file": ("photo.jpg", self.photos[k], "image/jpeg")},
                data={"author_id": str(author), "topic": str(k % 16)},
                timeout=30,
            )
            status = r.status_code
            post = r.json().get("post_id") if status == 202 else None
            why = "" if status == 202 else f"{status} {r.text[:100]}"
        except httpx.HTTPError as exc:
            status, post, why = 0, None, f"0 {type(exc).__name__}"
        with self._lock:
            self.statuses.append(status)
            if why:
                self.refusals[why] += 1
            if post is not None:
                self.accepted.append(int(post))

    def run(self) -> None:
        start = time.monotonic()
        with ThreadPoolExecutor(max_workers=16) as pool:
            for k in range(len(self.photos)):
                due = start + k / self.rate
                time.sleep(max(0.0, due - time.monotonic()))
                pool.submit(self._one, k)


def burst(
    url: str, authors: list[int], rate: float, photos: list[bytes]
) -> tuple[list[int], list[int], dict[str, int]]:
    """One burst, in the calling process: (statuses, accepted post ids, refusals)."""
    up = Uploader(url, authors, rate, photos)
    up.run()
    return up.statuses, up.accepted, dict(up.refusals)


def autogroups(s: Any) -> dict[str, list[str]]:
    """The scheduler's autogroup of each feed replica and upload worker: with autogroups on, a
    process's nice ranks it only against processes of its own group."""
    from stack import ray_head

    out: dict[str, list[str]] = {}
    for pid in ray_head.replica_pids(f"/tmp/ray-feedcast-{s.ray_port}", "feedcast"):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            group = Path(f"/proc/{pid}/autogroup").read_text().strip()
        except OSError:
            continue
        kind = "uploads" if b"feedcast-uploads:" in cmd else "replicas"
        out.setdefault(kind, []).append(group)
    return out


def wait_ready(url: str, post_ids: list[int], timeout_s: float) -> dict[str, Any]:
    """Poll every accepted upload until none is processing (or the timeout)."""
    left = set(post_ids)
    out: dict[str, float] = {"ready": 0, "failed": 0}
    t0 = time.monotonic()
    with httpx.Client(headers=API, timeout=10) as client:
        while left and time.monotonic() - t0 < timeout_s:
            for p in list(left):
                try:
                    status = client.get(f"{url}/v1/uploads/{p}").json().get("status")
                except (httpx.HTTPError, ValueError):
                    continue
                if status in ("ready", "failed"):
                    out[status] += 1
                    left.discard(p)
            if left:
                time.sleep(2.0)
    out["still_processing"] = len(left)
    out["drain_s"] = time.monotonic() - t0
    return out


_GATE_LINE = re.compile(
    r'\[(?P<at>[^\]]+)\] "GET /v1/feed/\S+ HTTP/[\d.]+" (?P<status>\d+) .* rt=(?P<rt>[\d.]+)'
)


def gate_p99_ms(s: Any, start: float, end: float) -> tuple[float, int]:
    """p99 of the feed's answered requests as the gate saw them (nginx's ``$request_time``,
    from the request's first byte to the answer's last), between wall-clock ``start`` and
    ``end``; and how many. The service's latency, whatever the load generator's own delays
    (it shares the cores)."""
    from stack import nginx

    times = []
    for line in (nginx.home(s) / "gate.log").read_text().splitlines():
        m = _GATE_LINE.search(line)
        if m is None or m["status"] != "200":
            continue
        at = datetime.strptime(m["at"], "%d/%b/%Y:%H:%M:%S %z").timestamp()
        if start <= at < end:
            times.append(float(m["rt"]))
    return (float(np.percentile(times, 99) * 1000) if times else float("nan")), len(times)


def _lag_p99(calls: list[Any]) -> float:
    return float(np.percentile([c.lag_s for c in calls], 99) * 1000) if calls else float("nan")


def _cores(meter: CpuMeter, seconds: float) -> dict[str, float]:
    out = {g: round(ms / 1000 / seconds, 3) for g, ms in meter.groups_ms.items() if ms > 0}
    return out | {"machine": round(meter.total_ms / 1000 / seconds, 3)}


def run(
    suite: Any, summary: Callable[[list[Any]], dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, bool]]:
    """The scenario's figures and checks (``bench.chaos`` makes them its result)."""
    s = suite.s
    per_job = job_seconds(suite.url, list(suite.users))
    capacity = s.upload_max_replicas / per_job
    rate = 2 * capacity
    n = int(rate * BURST_S)
    photos = [samples.photo_for(9_000_000 + k + int(time.time()) * 1000) for k in range(n)]
    load = suite.load(events=False)
    time.sleep(10)
    before, during_cpu = CpuMeter(), CpuMeter()
    t0, w0 = time.monotonic(), time.time()
    before.start()
    time.sleep(REF_S)
    before.stop()
    t1, w1 = time.monotonic(), time.time()
    during_cpu.start()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        statuses, accepted, refusals = pool.submit(
            burst, suite.url, list(suite.users), rate, photos
        ).result()
    during_cpu.stop()
    t2, w2 = time.monotonic(), time.time()
    load.stop()
    ref, during = load.window(t0, t1), load.window(t1, t2)
    groups = autogroups(s)
    drained = wait_ready(suite.url, accepted, timeout_s=900)
    p99_ref, p99_during = percentile_ms(ref, 99), percentile_ms(during, 99)
    gate_ref, n_ref = gate_p99_ms(s, w0, w1)
    gate_during, n_during = gate_p99_ms(s, w1, w2)
    codes: dict[str, int] = {}
    for c in statuses:
        codes[str(c)] = codes.get(str(c), 0) + 1
    fig = summary(during) | {
        "upload_job_s": per_job,
        "tier_capacity_per_s": capacity,
        "uploads_offered_per_s": rate,
        "uploads_sent": len(statuses),
        "uploads_accepted": len(accepted),
        "upload_statuses": codes,
        "upload_refusals": dict(Counter(refusals).most_common(3)),
        "uploads_ready": drained["ready"],
        "uploads_failed": drained["failed"],
        "uploads_lost": drained["still_processing"],
        "drain_s": drained["drain_s"],
        "feed_p99_before_ms": p99_ref,
        "feed_p99_during_ms": p99_during,
        "feed_p99_ratio": p99_during / p99_ref if p99_ref else float("nan"),
        # The same at the gate (the service's latency, not the load generator's delays).
        "gate_feed_p99_before_ms": gate_ref,
        "gate_feed_p99_during_ms": gate_during,
        "gate_feed_answered": [n_ref, n_during],
        "gate_feed_p99_ratio": gate_during / gate_ref if gate_ref else float("nan"),
        # Where the CPU went (cores, by process group), before and during the burst.
        "cores_before": _cores(before, t1 - t0),
        "cores_during": _cores(during_cpu, t2 - t1),
        # How late the feed's load generator sent its calls (its own event loop's delay).
        "client_lag_p99_ms_before": _lag_p99(ref),
        "client_lag_p99_ms_during": _lag_p99(during),
        "autogroups": groups,
    }
    return fig, {
        "uploads accepted": len(accepted) > 0,
        "none lost (every 202 ready)": drained["ready"] == len(accepted),
        "feed p99 ≤ 1.5× before (at the gate)": bool(np.isfinite(fig["gate_feed_p99_ratio"]))
        and fig["gate_feed_p99_ratio"] <= 1.5,
    }
