"""A short side-by-side probe of the feed's CPU bill: minutes, not the serve bench's hour.

``python -m bench.probe [--rate 40] [--seconds 20] [--profile page2]`` deploys the serve
bench's feed on its world (``bench/serve.py``: built if this hour has none), warms it, then
runs one open-loop window of each, at one rate, one after the other:

- ``idle``: no requests (the machine's background, in ms of CPU per second, per group);
- ``ping``: ``GET /v1/ping``, the floor (the same ingress, key check and rate limit);
- ``feed``: first pages of random readers (``limit`` 20);
- ``page2``: continued pages of sessions opened before the window (``limit`` 10, as
  ``bench/sessions.py``).

Each prints machine CPU per request and its groups (``bench/load.py``), and the Cassandra
node's CPU by thread (request pool, compaction, the collector, the JMX agent) and its
completed tasks per request by stage (requests taken, reads, writes, flushes). ``--profile W``
samples the replicas with py-spy during window ``W`` and prints the functions holding the
most samples (own and cumulative): where the replica's share of that window goes. Switch a
cost off between probes with the settings' environment variables (e.g.
``FEEDCAST_TAKEDOWN_REFRESH_S``) or by stopping a stack component, and compare.

Not a benchmark of record: windows minutes apart differ by a millisecond or two of noise.
``python -m bench.run serve`` is the reference.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench import load, serve, sessions
from core import db
from core.settings import DEV_API_KEY, Settings

WINDOWS = ("idle", "ping", "feed", "page2")
HEADERS = {"X-API-Key": DEV_API_KEY}


def replica_pids() -> list[int]:
    """The feed's replicas (``bench.load``'s ``replicas`` group)."""
    return [pid for pid, (group, _, _) in load.processes().items() if group == "replicas"]


def _threads(pid: int | None) -> dict[int, tuple[str, float]]:
    """Each thread of process ``pid``: its name with digits dropped (``ReadStage-3`` →
    ``ReadStage-``) and its CPU so far (ms)."""
    if pid is None:
        return {}
    out = {}
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return {}
    for task in tasks:
        try:
            name, ms = load.read_stat(task / "stat")
        except OSError:
            continue
        out[int(task.name)] = ("".join(ch for ch in name if not ch.isdigit()), ms)
    return out


def _node_counts(session: Any) -> dict[str, int]:
    """Cassandra's stages and their completed tasks so far (``system_views.thread_pools``):
    requests taken (``Native-Transport-Requests``), reads and writes run (``ReadStage``,
    ``MutationStage``), memtable flushes and compactions; and the reads, writes and range scans
    of each table outside Cassandra's own keyspaces (``system_views.local_*_latency``)."""
    rows = session.execute("SELECT name, completed_tasks FROM system_views.thread_pools")
    out = {r[0]: int(r[1]) for r in rows}
    for kind in ("read", "write", "scan"):  # per table, the node's own operations
        for r in session.execute(
            f"SELECT keyspace_name, table_name, count FROM system_views.local_{kind}_latency"
        ):
            if r[2] and not r[0].startswith("system"):
                out[f"{kind} {r[1]}"] = int(r[2])
    return out


def _by_thread(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU (ms) each thread used between two readings, summed by its name at the second: where
    a JVM's time went. Cassandra's request threads take the name of the stage they last
    served (one pool runs reads, writes and the native transport), so read those three as
    one."""
    out: dict[str, float] = {}
    for tid, (name, ms) in after.items():
        out[name] = out.get(name, 0.0) + ms - before.get(tid, (name, 0.0))[1]
    return out


class Profile:
    """py-spy on every replica for one window; ``top()`` sums their raw stacks."""

    def __init__(self, seconds: float) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="feedcast-probe-"))
        spy = shutil.which("py-spy") or shutil.which(
            "py-spy", path=str(Path(sys.executable).parent)
        )
        if spy is None:
            raise SystemExit("--profile needs py-spy on PATH (pip install py-spy)")
        # py-spy's own CPU lands in the window's ``other`` group: read a profiled window's
        # figures for where the replicas' time goes, not for what a request costs.
        args = [spy, "record", "--rate", "100", "--format", "raw", "--nonblocking"]
        args += ["--duration", str(int(seconds) + 2)]
        self.procs = [
            subprocess.Popen(
                [*args, "--pid", str(pid), "--output", str(self.dir / f"{pid}.txt")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for pid in replica_pids()
        ]

    def top(self, n: int = 25) -> tuple[int, list[tuple[str, int, int]]]:
        """(samples, [(function, own samples, samples with it on the stack)]), by cumulative."""
        for p in self.procs:
            p.wait(timeout=60)
        own: collections.Counter[str] = collections.Counter()
        cum: collections.Counter[str] = collections.Counter()
        total = 0
        for f in self.dir.glob("*.txt"):
            for line in f.read_text().splitlines():
                stack, _, count = line.rpartition(" ")
                k = int(count)
                # "fn (path/file.py:line)" → "fn (file.py)"; py-spy samples busy threads only
                frames = [f"{fr.split(' (')[0]} ({fr.rsplit('/', 1)[-1].split(':')[0]})"
                          for fr in stack.split(";")]  # fmt: skip
                total += k
                own[frames[-1]] += k
                for fr in set(frames):
                    cum[fr] += k
        return total, [(f, own[f], c) for f, c in cum.most_common(n)]


async def _windows(
    s: Settings,
    url: str,
    readers: list[int],
    windows: list[str],
    rate: float,
    seconds: float,
    profile: str | None,
) -> dict[str, Any]:
    from stack import proc
    from stack.cassandra import NAME

    rng = random.Random(0)
    out: dict[str, Any] = {}
    cassandra_pid = proc.read_pid(s.stack_dir, NAME)
    cluster, cql = db.connect(s, keyspace=None)

    def feed(_: int) -> tuple[str, dict[str, Any]]:
        return f"/v1/feed/{readers[rng.randrange(len(readers))]}", {"limit": serve.LIMIT}

    def ping(_: int) -> tuple[str, dict[str, Any]]:
        return "/v1/ping", {}

    async with load.RawClient(url, HEADERS, timeout_s=30) as c:
        opened = await sessions.open_sessions(c, readers, int(rate * seconds) + 10)
    page2, then = sessions.scroller(opened)
    for name in windows:
        spy = Profile(seconds) if profile == name else None
        jvm_before = _threads(cassandra_pid)
        counts_before = _node_counts(cql)
        if name == "idle":
            meter = load.CpuMeter()
            meter.start()
            await asyncio.sleep(seconds)
            meter.stop()
            per_s = {g: round(ms / seconds, 1) for g, ms in meter.groups_ms.items()}
            top = [(ms / seconds, cmd[:70]) for ms, _, cmd in meter.busiest(15)]
            out[f"{name}{len(out)}"] = {
                "ms_per_s": round(meter.total_ms / seconds, 1),
                "by_group": per_s,
                "top": [(round(ms, 1), cmd) for ms, cmd in top],
            }
            print(f"idle: {meter.total_ms / seconds:6.1f} ms of CPU per second {per_s}")
            for ms, cmd in top:
                print(f"  {ms:6.1f} ms/s  {cmd}")
        else:
            fn, is_page, on_body = {
                "ping": (ping, False, None),
                "feed": (feed, True, None),
                "page2": (page2, True, then),
            }[name]
            r = await load.open_loop(
                url, HEADERS, fn, rate, seconds, is_page=is_page, on_body=on_body
            )
            groups = {g: round(v, 2) for g, v in r.cpu_ms_by_group.items() if v >= 0.05}
            out[f"{name}{len(out)}"] = {
                "cpu_ms_per_request": round(r.cpu_ms_per_request, 2),
                "answered_rps": round(r.answered_rps, 1),
                "p50_ms": round(r.quantile(50), 1),
                "p99_ms": round(r.quantile(99), 1),
                "errors": r.errors,
                "degraded": r.degraded,
                "by_group": groups,
            }
            print(
                f"{name:>5} @ {rate:g} req/s: {r.cpu_ms_per_request:6.2f} ms/request, "
                f"p50 {r.quantile(50):.0f} p99 {r.quantile(99):.0f} ms, errors {r.errors}, "
                f"degraded {r.degraded} {groups}",
                flush=True,
            )
        used = _by_thread(jvm_before, _threads(cassandra_pid))
        by_thread = sorted(((ms, k) for k, ms in used.items()), reverse=True)
        idle = name == "idle"
        per = seconds if idle else max(rate * seconds, 1)  # per second idle, else per request
        tops = [(round(ms / per, 2), k) for ms, k in by_thread[:8] if ms > 0]
        counts_after = _node_counts(cql)
        tasks = {
            k: round((n - counts_before.get(k, 0)) / per, 2)
            for k, n in sorted(counts_after.items())
            if n > counts_before.get(k, 0)
        }
        window = out[next(reversed(out))]  # the one just run
        window["cassandra_threads"], window["cassandra_tasks"] = tops, tasks
        print(f"  cassandra by thread ({'ms/s' if idle else 'ms/request'}): {tops}")
        print(f"  cassandra tasks ({'per s' if idle else 'per request'}): {tasks}")
        if spy is not None:
            total, rows = spy.top()
            out["profile"] = {"window": name, "samples": total, "top": rows}
            print(f"py-spy, replicas during {name}: {total} busy samples")
            for fn_name, own, cum in rows:
                share, mine = 100 * cum / max(total, 1), 100 * own / max(total, 1)
                print(f"  {share:5.1f}% cum {mine:5.1f}% own  {fn_name}")
        await asyncio.sleep(2)
    cluster.shutdown()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rate", type=float, default=40.0, help="offered req/s of every window")
    p.add_argument("--seconds", type=float, default=20.0, help="length of each window")
    p.add_argument(
        "--windows",
        default=",".join(WINDOWS),
        help=f"comma-separated windows to run, in order, repeats allowed (of {', '.join(WINDOWS)})",
    )
    p.add_argument("--profile", choices=WINDOWS[1:], help="py-spy the replicas in this window")
    p.add_argument("--out", type=Path, help="also write the figures as JSON here")
    a = p.parse_args()
    windows = a.windows.split(",")
    if unknown := sorted(set(windows) - set(WINDOWS)):
        p.error(f"unknown window(s) {', '.join(unknown)}: choose from {', '.join(WINDOWS)}")

    import ray
    from ray import serve as ray_serve

    from serving.deploy import deploy

    s = serve.bench_settings(Settings())
    readers = serve.world(s)
    url = deploy(s, address="local")
    try:
        with httpx.Client(headers=HEADERS, timeout=30) as c:
            for u in readers[:60]:
                c.get(f"{url}/v1/feed/{u}", params={"limit": serve.LIMIT})
        time.sleep(5)
        out = asyncio.run(_windows(s, url, readers, windows, a.rate, a.seconds, a.profile))
    finally:
        ray_serve.shutdown()
        ray.shutdown()
    out["env"] = {k: v for k, v in os.environ.items() if k.startswith("FEEDCAST_")}
    if a.out:
        a.out.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
