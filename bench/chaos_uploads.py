"""Chaos scenario ``uploads_2x``: photo uploads at twice the upload tier's capacity for 60 s,
beside the feed's traffic at B. Bars (issue 22): no accepted upload is lost (every 202 ends
``ready``), and the feed's p99 during the burst stays within 1.5x its baseline, in the same run
(the machine is noisy: side by side, not against an older figure). The baseline is the feed's
p99 over two reference minutes of the same load: just before the burst, and once the tier has
drained what the burst left. A p99 of one minute at B rests on its slowest ~30 requests, so one
stall of the machine (a compaction, a collection) in a single reference decided the verdict
either way (docs/RELIABILITY.md); the ratio against the first minute alone is reported too.

The tier's capacity is measured here, as deployed: the median time from an upload's 202 to
``ready`` with the tier idle (one worker's job, the quality search included), times the workers
it may have (``upload_max_replicas``). Each upload is a different crop (different bytes: a new
post).
"""

from __future__ import annotations

import multiprocessing
import os
import re
import shutil
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import UTC, datetime
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


JOBS = 4  # uploads, one at a time, that measure a job on the idle tier


def job_seconds(url: str, authors: list[int], n: int = JOBS) -> float:
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

    def _one(self, client: httpx.Client, k: int) -> None:
        author = self.authors[k % len(self.authors)]
        try:
            r = client.post(
                f"{self.url}/v1/uploads",
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
        # One client and its connection pool for every sender: a client per upload builds an
        # SSL context each time, which took 0.7 of a core here, CPU no real client spends on
        # the server's cores.
        limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
        with (
            httpx.Client(headers=API, timeout=30, limits=limits) as client,
            ThreadPoolExecutor(max_workers=16) as pool,
        ):
            start = time.monotonic()
            for k in range(len(self.photos)):
                due = start + k / self.rate
                time.sleep(max(0.0, due - time.monotonic()))
                pool.submit(self._one, client, k)


def burst(
    url: str, authors: list[int], rate: float, folder: str, at: float
) -> tuple[list[int], list[int], dict[str, int]]:
    """One burst, in the calling process, of the photos in ``folder`` (read first), from
    wall-clock time ``at``: (statuses, accepted post ids, refusals)."""
    photos = [p.read_bytes() for p in sorted(Path(folder).glob("*.jpg"))]
    time.sleep(max(0.0, at - time.time()))
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


def gate_times(s: Any, *windows: tuple[float, float]) -> list[list[float]]:
    """For each wall-clock ``(start, end)`` window, the seconds the gate took for each of the
    feed's answered requests in it (nginx's ``$request_time``, from the request's first byte to
    the answer's last), from one read of its log: the service's latency, whatever the load
    generator's own delays (it shares the cores)."""
    from stack import nginx

    times: list[list[float]] = [[] for _ in windows]
    for line in (nginx.home(s) / "gate.log").read_text().splitlines():
        m = _GATE_LINE.search(line)
        if m is None or m["status"] != "200":
            continue
        at = datetime.strptime(m["at"], "%d/%b/%Y:%H:%M:%S %z").timestamp()
        for k, (start, end) in enumerate(windows):
            if start <= at < end:
                times[k].append(float(m["rt"]))
    return times


def p99_ms(times: list[float]) -> float:
    return float(np.percentile(times, 99) * 1000) if times else float("nan")


def _lag_p99(calls: list[Any]) -> float:
    return float(np.percentile([c.lag_s for c in calls], 99) * 1000) if calls else float("nan")


def _cores(meter: CpuMeter, seconds: float) -> dict[str, float]:
    out = {g: round(ms / 1000 / seconds, 3) for g, ms in meter.groups_ms.items() if ms > 0}
    return out | {"machine": round(meter.total_ms / 1000 / seconds, 3)}


def _top(meter: CpuMeter, seconds: float, n: int = 12) -> dict[str, float]:
    """The ``n`` processes that used the most CPU in the window, in cores."""
    return {
        f"{cmd[:70]} [{pid}]": round(ms / 1000 / seconds, 3) for ms, pid, cmd in meter.busiest(n)
    }


def _stages() -> dict[str, dict[float, float]]:
    import ray

    from serving.metrics import scrape_targets, stage_buckets

    return stage_buckets(scrape_targets(ray.nodes()))


def _stage_p99_ms(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
    """Each feed stage's p99 between two scrapes (the replicas' own timing: where the time
    goes, candidates from Cassandra, features from Redis, the models)."""
    from serving.metrics import bucket_quantile

    return {st: round(bucket_quantile(a.get(st, {}), b[st], 0.99) * 1000, 1) for st in sorted(b)}


def _pressure() -> dict[str, float]:
    """The kernel's stall counters (PSI, microseconds): time some task waited for the CPU, for
    I/O, for memory, since boot. Two readings' difference over the window's length is the share
    of that window in which something was stalled."""
    out = {}
    for what in ("cpu", "io", "memory"):
        try:
            line = Path(f"/proc/pressure/{what}").read_text().splitlines()[0]
        except OSError:
            continue
        out[what] = float(line.rsplit("total=", 1)[1])
    return out


def _stalled(a: dict[str, float], b: dict[str, float], seconds: float) -> dict[str, float]:
    return {k: round((b[k] - a[k]) / 1e6 / seconds, 3) for k in b if k in a}


def _side_by_side(
    suite: Any, start: Callable[[float], Callable[[], Any]]
) -> tuple[Any, dict[str, Any]]:
    """The feed's load at B: 10 s to settle, ``REF_S`` alone, then the disturbance beside it,
    then (the tier idle again) ``REF_S`` alone once more; its result and the feed's figures of
    the windows (at the generator, at the gate, per stage in the replicas, and the CPU by
    process group).

    ``start(at)`` is called before the load: it readies the disturbance in processes of its
    own, to begin by itself at wall-clock ``at``, and returns what waits for its end. Nothing
    of it runs in this process during the windows: a pickle of its inputs or a child's start
    here would stall the load generator's loop, and the calls it delayed would arrive
    together, a queue the gate would count as the service's latency."""
    s = suite.s
    idle_s = _wait_tier_idle()
    at = time.time() + 15 + REF_S  # the load's start, 10 s to settle, then the reference
    wait = start(at)
    load = suite.load(events=False)
    time.sleep(max(0.0, at - REF_S - time.time()))
    before, during_cpu = CpuMeter(), CpuMeter()
    scraped = [_stages()]  # Ray exports every few seconds: the windows blur by that much
    t0, w0 = time.monotonic(), time.time()
    psi = [_pressure()]
    before.start()
    time.sleep(max(0.0, at - time.time()))  # the disturbance begins by itself at ``at``
    before.stop()
    t1, w1 = time.monotonic(), time.time()
    psi.append(_pressure())
    scraped.append(_stages())
    during_cpu.start()
    out = wait()
    during_cpu.stop()
    t2, w2 = time.monotonic(), time.time()
    psi.append(_pressure())
    scraped.append(_stages())
    # The second reference: the same load once the tier has drained what the burst left, so
    # that one slow minute (a compaction, a collection) is not the whole baseline.
    drained_s = _wait_tier_idle()
    after = CpuMeter()
    scraped.append(_stages())
    t3, w3 = time.monotonic(), time.time()
    after.start()
    time.sleep(REF_S)
    after.stop()
    scraped.append(_stages())
    t4, w4 = time.monotonic(), time.time()
    load.stop()
    ref, during = load.window(t0, t1), load.window(t1, t2)
    ref_after = load.window(t3, t4)
    p99_ref, p99_during = percentile_ms(ref, 99), percentile_ms(during, 99)
    g_ref, g_during, g_after = gate_times(s, (w0, w1), (w1, w2), (w3, w4))
    gate_ref, gate_during, gate_after = p99_ms(g_ref), p99_ms(g_during), p99_ms(g_after)
    gate_base = p99_ms(g_ref + g_after)
    return out, {
        "during": during,
        # The gate's seconds per answered feed request in each window (before, during, after),
        # for the repeated scenario's pooled figures; callers pop it.
        "gate_times": (g_ref, g_during, g_after),
        # The windows' wall-clock bounds (before: w0-w1, during: w1-w2, after: w3-w4), UTC.
        "windows_utc": [
            datetime.fromtimestamp(w, UTC).strftime("%H:%M:%S") for w in (w0, w1, w2, w3, w4)
        ],
        "tier_idle_after_s": idle_s,
        "feed_p99_before_ms": p99_ref,
        "feed_p99_during_ms": p99_during,
        "feed_p99_after_ms": percentile_ms(ref_after, 99),
        "feed_p99_ratio": p99_during / p99_ref if p99_ref else float("nan"),
        # The same at the gate (the service's latency, not the load generator's delays).
        "gate_feed_p99_before_ms": gate_ref,
        "gate_feed_p99_during_ms": gate_during,
        "gate_feed_p99_after_ms": gate_after,
        "gate_feed_p99_baseline_ms": gate_base,  # both references' requests together
        "gate_feed_answered": [len(g_ref), len(g_during), len(g_after)],
        "gate_feed_p99_ratio_vs_before": gate_during / gate_ref if gate_ref else float("nan"),
        "gate_feed_p99_ratio": gate_during / gate_base if gate_base else float("nan"),
        "tier_drained_after_burst_s": drained_s,
        # Where the CPU went (cores, by process group), before, during and after.
        "cores_before": _cores(before, t1 - t0),
        "cores_during": _cores(during_cpu, t2 - t1),
        "cores_after": _cores(after, t4 - t3),
        # Which processes took the burst's CPU (the upload API, workers, render processes, the
        # upload client are apart here; ``cores_during`` sums them by group).
        "top_processes_during": _top(during_cpu, t2 - t1),
        # How late the feed's load generator sent its calls (its own event loop's delay).
        "client_lag_p99_ms_before": _lag_p99(ref),
        "client_lag_p99_ms_during": _lag_p99(during),
        # Share of each window in which some task was stalled on the CPU, I/O or memory.
        "stalled_before": _stalled(psi[0], psi[1], t1 - t0),
        "stalled_during": _stalled(psi[1], psi[2], t2 - t1),
        "stage_p99_ms_before": _stage_p99_ms(scraped[0], scraped[1]),
        "stage_p99_ms_during": _stage_p99_ms(scraped[1], scraped[2]),
        "stage_p99_ms_after": _stage_p99_ms(scraped[3], scraped[4]),
    }


def _wait_tier_idle(limit_s: float = 600.0, every_s: float = 5.0) -> float:
    """Wait until the upload tier is idle (under 0.05 of a core over ``every_s``): jobs an
    earlier run left behind would otherwise render during the reference window and make it
    no reference. Seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        meter = CpuMeter()
        meter.start()
        time.sleep(every_s)
        meter.stop()
        if meter.groups_ms.get("uploads", 0.0) / 1000 / every_s < 0.05:
            break
    return time.monotonic() - start


def _clean_reference(fig: dict[str, Any]) -> bool:
    """The upload tier did (almost) nothing in either reference window."""
    return all(fig[w].get("uploads", 0.0) < 0.1 for w in ("cores_before", "cores_after"))


def _gate_check(fig: dict[str, Any]) -> bool:
    ratio = fig["gate_feed_p99_ratio"]
    return bool(np.isfinite(ratio)) and ratio <= 1.5


def _feed_checks(fig: dict[str, Any]) -> dict[str, bool]:
    """The checks of the feed's side, the same in ``uploads_2x`` and its controls."""
    return {
        "reference windows free of upload work": _clean_reference(fig),
        "feed p99 ≤ 1.5× its baseline (at the gate)": _gate_check(fig),
    }


def _photos(n: int) -> Path:
    """A folder of ``n`` different crops (each a new post), for one burst."""
    folder = Path(tempfile.mkdtemp(prefix="feedcast-burst-"))
    for k in range(n):
        photo = samples.photo_for(9_000_000 + k + int(time.time()) * 1000)
        (folder / f"{k:05d}.jpg").write_bytes(photo)
    return folder


def _burst_round(suite: Any, rate: float) -> tuple[dict[str, Any], list[int]]:
    """One burst of ``rate`` uploads/s for ``BURST_S`` beside the feed at B, with its two
    reference minutes: the feed's figures of the windows and the burst's, and the accepted post
    ids (not yet waited for)."""
    from serving import startup

    folder = _photos(int(rate * BURST_S))
    # The clients are other machines: their process is a scheduling group of its own, not one
    # with the feed's load generator (a child of this process would share its session).
    pool = ProcessPoolExecutor(
        1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=startup.own_group_of,
        initargs=(os.getpid(), 0, False, "upload-client"),
    )

    def start(at: float) -> Callable[[], tuple[list[int], list[int], dict[str, int]]]:
        done = pool.submit(burst, suite.url, list(suite.users), rate, str(folder), at)
        return done.result

    try:
        (statuses, accepted, refusals), feed = _side_by_side(suite, start)
    finally:
        pool.shutdown()
        shutil.rmtree(folder, ignore_errors=True)
    codes: dict[str, int] = {}
    for c in statuses:
        codes[str(c)] = codes.get(str(c), 0) + 1
    return feed | {
        "uploads_offered_per_s": rate,
        "uploads_sent": len(statuses),
        "uploads_accepted": len(accepted),
        "upload_statuses": codes,
        "upload_refusals": dict(Counter(refusals).most_common(3)),
    }, accepted


def _offered_rate(suite: Any) -> tuple[float, float, float, dict[str, float]]:
    """(one job's seconds on the idle tier, the tier's capacity, twice it: the burst's rate,
    and how the capacity was found). The capacity is the lower of two: the workers' (each a
    job at a time, ``upload_max_replicas / seconds``) and the CPU cap's (``upload_cpu_fraction``
    of the cores ÷ the tier's CPU seconds per job, measured over the same jobs)."""
    from core import cpucap

    meter = CpuMeter()
    meter.start()
    per_job = job_seconds(suite.url, list(suite.users), n=JOBS)
    meter.stop()
    cpu_per_job = meter.groups_ms.get("uploads", 0.0) / 1000 / JOBS
    workers = suite.s.upload_workers_max / per_job
    cap = cpucap.cores_for(suite.s.upload_cpu_fraction)
    capped = cap / cpu_per_job if cap > 0 and cpu_per_job > 0 else float("inf")
    capacity = min(workers, capped)
    rate = 2 * capacity
    print(
        f"  one job {per_job:.2f} s, {cpu_per_job:.2f} CPU s on the idle tier; capacity "
        f"{capacity:.2f}/s (workers {workers:.2f}, cap {capped:.2f}): {rate:.1f} uploads/s offered"
    )
    how = {
        "upload_job_cpu_s": cpu_per_job,
        "upload_cpu_cap_cores": cap,
        "capacity_workers_per_s": workers,
        "capacity_cap_per_s": capped,
    }
    return per_job, capacity, rate, how


def run(
    suite: Any, summary: Callable[[list[Any]], dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, bool]]:
    """The scenario's figures and checks (``bench.chaos`` makes them its result)."""
    per_job, capacity, rate, how = _offered_rate(suite)
    feed, accepted = _burst_round(suite, rate)
    feed.pop("gate_times")
    groups = autogroups(suite.s)
    drained = wait_ready(suite.url, accepted, timeout_s=900)
    fig = summary(feed.pop("during")) | {
        "upload_job_s": per_job,
        **how,
        "tier_capacity_per_s": capacity,
        "uploads_ready": drained["ready"],
        "uploads_failed": drained["failed"],
        "uploads_lost": drained["still_processing"],
        "drain_s": drained["drain_s"],
        **feed,
        "autogroups": groups,
    }
    return fig, {
        "uploads accepted": len(accepted) > 0,
        "none lost (every 202 ready)": drained["ready"] == len(accepted),
        **_feed_checks(fig),
    }


def _spin(at: float, seconds: float) -> int:
    """Busy CPU for ``seconds`` from wall-clock ``at``: a render's CPU with no render."""
    time.sleep(max(0.0, at - time.time()))
    end, n = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        n += 1
    return n


def run_cpu_control(
    suite: Any, summary: Callable[[list[Any]], dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, bool]]:
    """The control of ``uploads_2x``: for 60 s beside the feed, as many processes as the tier has
    workers spin the CPU in the render processes' own scheduling group and nice
    (``startup.own_session``), and do nothing else: no upload, no Cassandra write, no client.
    What the feed's p99 does here is what CPU work at that priority costs it on these cores,
    whatever the tier does."""
    from serving import startup, uploads

    s = suite.s
    n = s.upload_workers_max

    pool = ProcessPoolExecutor(
        n,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=startup.own_group_of,  # counted as "uploads" by its name
        initargs=(os.getpid(), s.upload_nice, s.upload_sched_idle, uploads.RENDER_NAME),
    )

    def start(at: float) -> Callable[[], list[int]]:
        spins = [pool.submit(_spin, at, BURST_S) for _ in range(n)]
        return lambda: [f.result() for f in spins]

    try:
        _, feed = _side_by_side(suite, start)
    finally:
        pool.shutdown()
    feed.pop("gate_times")
    fig = summary(feed.pop("during")) | {"spinners": n, "spinner_nice": s.upload_nice, **feed}
    return fig, _feed_checks(fig)


def _nothing(at: float) -> Callable[[], None]:
    """The null control's disturbance: none, for ``BURST_S`` from ``at``."""
    return lambda: time.sleep(max(0.0, at + BURST_S - time.time()))


def run_null_control(
    suite: Any, summary: Callable[[list[Any]], dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, bool]]:
    """The A/A control of ``uploads_2x``: the same three windows at B (a minute before, the
    60 s "burst", a minute after) with nothing at all in the middle one. Its ratio is what the
    1.5x check says of the machine alone: where it swings past 1.5x, a verdict of
    ``uploads_2x`` in one run is the noise of a minute's p99, not the uploads."""

    _, feed = _side_by_side(suite, _nothing)
    feed.pop("gate_times")
    fig = summary(feed.pop("during")) | feed
    return fig, _feed_checks(fig)


# Bursts, and as many null controls, in ``uploads_2x_repeated`` (each pair ~8 min here).
ROUNDS = int(os.environ.get("FEEDCAST_CHAOS_ROUNDS", "4"))


def _workers_at_floor(s: Any, limit_s: float = 400.0) -> float:
    """Wait until the upload tier is back at its floor (``upload_min_replicas`` workers running,
    none starting or stopping), so that every burst of the repeated scenario starts the second
    worker as the first did. Seconds waited."""
    from ray import serve

    from serving.deploy import UPLOAD_APP_NAME

    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        app = serve.status().applications.get(UPLOAD_APP_NAME)
        states = dict(app.deployments["UploadWorker"].replica_states) if app else {}
        if states == {"RUNNING": s.upload_min_replicas}:
            break
        time.sleep(5.0)
    return time.monotonic() - start


def _pooled_ratio(rounds: list[tuple[list[float], list[float], list[float]]]) -> float:
    """p99 of every round's middle window's requests together ÷ p99 of every round's two
    reference minutes' requests together."""
    during = [t for _, d, _ in rounds for t in d]
    base = [t for b, _, a in rounds for t in b + a]
    return p99_ms(during) / p99_ms(base) if base and during else float("nan")


def run_repeated(
    suite: Any, summary: Callable[[list[Any]], dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, bool]]:
    """``ROUNDS`` bursts and as many null controls, alternating (burst first in even rounds, the
    control first in odd ones), each from the tier at its floor. One minute's p99 at B rests on
    its ~30 slowest requests and swung 0.33–3.88x between A/A minutes (docs/RELIABILITY.md), so
    the verdict is pooled, and against the controls: the p99 of all the bursts' middle minutes'
    requests together against that of all the null controls' middle minutes together. Those
    are the same minutes of the same load (its age matters: in the first run the controls'
    middle minutes were faster than their own references in every round, 0.51-0.73x), with and
    without the burst: what the issue calls the feed's baseline. The pooled ratio against each
    burst's own reference minutes is reported beside it."""
    s = suite.s
    per_job, capacity, rate, how = _offered_rate(suite)
    bursts: list[tuple[list[float], list[float], list[float]]] = []
    nulls: list[tuple[list[float], list[float], list[float]]] = []
    rows: list[dict[str, Any]] = []
    accepted: list[int] = []
    clean = True
    during_calls: list[Any] = []
    for k in range(ROUNDS):
        for kind in ("burst", "null") if k % 2 == 0 else ("null", "burst"):
            waited = _workers_at_floor(s)
            print(f"  round {k + 1}/{ROUNDS}: {kind} (tier at its floor after {waited:.0f} s)")
            ids: list[int] = []
            if kind == "burst":
                feed, ids = _burst_round(suite, rate)
                accepted += ids
                during_calls += feed["during"]
                bursts.append(feed.pop("gate_times"))
            else:
                _, feed = _side_by_side(suite, _nothing)
                nulls.append(feed.pop("gate_times"))
            clean = clean and _clean_reference(feed)
            rows.append(
                {
                    "round": k + 1,
                    "kind": kind,
                    "gate_p99_before_ms": round(feed["gate_feed_p99_before_ms"], 1),
                    "gate_p99_during_ms": round(feed["gate_feed_p99_during_ms"], 1),
                    "gate_p99_after_ms": round(feed["gate_feed_p99_after_ms"], 1),
                    "ratio": round(feed["gate_feed_p99_ratio"], 2),
                    "windows_utc": feed["windows_utc"],
                    "answered": feed["gate_feed_answered"],
                    "uploads_accepted": len(ids),
                    "cores": [feed[w] for w in ("cores_before", "cores_during", "cores_after")],
                    "stage_p99_ms": [
                        feed[w]
                        for w in (
                            "stage_p99_ms_before",
                            "stage_p99_ms_during",
                            "stage_p99_ms_after",
                        )
                    ],
                    "cpu_stalled": [feed["stalled_before"], feed["stalled_during"]],
                }
            )
            brief = {k: v for k, v in rows[-1].items() if k not in ("cores", "stage_p99_ms")}
            print(f"    {brief}")
    drained = wait_ready(suite.url, accepted, timeout_s=900)
    burst_ratio, null_ratio = _pooled_ratio(bursts), _pooled_ratio(nulls)
    burst_during = [t for _, d, _ in bursts for t in d]
    null_during = [t for _, d, _ in nulls for t in d]
    fig = summary(during_calls) | {
        "rounds": ROUNDS,
        "upload_job_s": per_job,
        **how,
        "tier_capacity_per_s": capacity,
        "uploads_offered_per_s": rate,
        "uploads_accepted": len(accepted),
        "uploads_ready": drained["ready"],
        "uploads_failed": drained["failed"],
        "uploads_lost": drained["still_processing"],
        # Pooled p99 of the bursts' minutes ÷ pooled p99 of their own reference minutes.
        "gate_feed_p99_ratio_pooled": burst_ratio,
        # The same of the null controls: what the figure is with nothing in the middle minute.
        "null_gate_feed_p99_ratio_pooled": null_ratio,
        # The verdict: the bursts' middle minutes against the controls' middle minutes.
        "burst_vs_null_during_p99": p99_ms(burst_during) / p99_ms(null_during)
        if null_during
        else float("nan"),
        "burst_during_p99_ms": p99_ms(burst_during),
        "null_during_p99_ms": p99_ms(null_during),
        "burst_during_p50_ms": float(np.percentile(burst_during, 50) * 1000)
        if burst_during
        else float("nan"),
        "null_during_p50_ms": float(np.percentile(null_during, 50) * 1000)
        if null_during
        else float("nan"),
        "per_round": rows,
    }
    return fig, {
        "uploads accepted": len(accepted) > 0,
        "none lost (every 202 ready)": drained["ready"] == len(accepted),
        "reference windows free of upload work": clean,
        "pooled feed p99 during the bursts ≤ 1.5× during the controls (at the gate)": bool(
            np.isfinite(fig["burst_vs_null_during_p99"])
        )
        and fig["burst_vs_null_during_p99"] <= 1.5,
    }
