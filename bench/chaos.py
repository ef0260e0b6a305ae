"""``make chaos``: the service's promises under dying dependencies, overload and hostile input.

Each scenario runs against the real local stack with open-loop load at B = half the measured
capacity (:mod:`bench.chaos_load`), and returns its figures and a pass/fail against the bar the
reliability issue set. Results go to ``bench/results/chaos.json`` and a table in
``docs/RELIABILITY.md``; a scenario that cannot pass here says why there (never skipped
silently). The suite stops what it started: its own Redis and Ray head, and any node it stopped
comes back.

``python -m bench.chaos [scenario ...]`` runs some; the names are in :data:`SCENARIOS`, and
no name runs :data:`DEFAULT`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from bench import chaos_alerts, chaos_uploads
from bench.chaos_load import Call, Load, capacity, percentile_ms
from core import constants as C
from core.settings import DEV_API_KEY, Settings

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "chaos.json"
DOC = ROOT / "docs" / "RELIABILITY.md"
CHAOS_PORT = 8031
CHAOS_REDIS_PORT = 6391
CHAOS_RAY_PORT = 6385
CHAOS_EDGE_PORT = 8032  # its own nginx: the gate in front of the chaos deployment
CHAOS_GATE_PORT = 8033
CHAOS_HAPROXY_PORTS = (8038, 8039)  # serve_port + 1 and + 2 are the edge's and the gate's


def chaos_settings(base: Settings) -> Settings:
    """A deployment of its own: keyspace, Feast project, model names, Redis, Ray head, port."""
    return base.model_copy(
        update={
            "cassandra_keyspace": "feedcast_chaos",
            "feast_project": "chaos",
            "model_name": "feed_ranker_chaos",
            "heavy_model_name": "feed_ranker_heavy_chaos",
            "experiment": "feedcast-chaos",
            "data_dir": base.home / "chaos",
            "serve_port": CHAOS_PORT,
            "redis_port": CHAOS_REDIS_PORT,
            "ray_port": CHAOS_RAY_PORT,
            "ray_metrics_port": 8095,
            "edge_port": CHAOS_EDGE_PORT,
            "gate_port": CHAOS_GATE_PORT,
            "prometheus_port": 9290,  # its own, scraping its own Ray head (8095)
            "alertmanager_port": 9293,
            "redis_exporter_port": 9295,
            "mtail_port": 9296,
            "serve_haproxy_ports": CHAOS_HAPROXY_PORTS,
            "rate_limit_per_s": 100_000.0,  # one load key: the limiter is not under test here
            "rate_limit_burst": 100_000,
            # N+1: with a replica dead (it takes tens of seconds to come back on 2 busy cores),
            # the other two still carry B, which one alone cannot (B is half of what all serve).
            "serve_min_replicas": 3,
            "serve_max_replicas": 3,
            "upload_quota_per_hour": 1_000_000,  # uploads_2x: the tier is under test, not quotas
        }
    )


# -- bring-up -------------------------------------------------------------------------------------


def bring_up(s: Settings) -> tuple[str, list[int], list[int]]:
    """Stack, its own Redis, a small world, models, the Ray head and the feed; the URL, readers
    and posts."""
    from pipelines.steps import features_apply, features_materialize, generate_world, train
    from serving.deploy import deploy
    from simulator.config import WorldConfig
    from stack import local, monitoring, ray_head, redis
    from training.heavy import HeavyParams

    local.up(s.model_copy(update={"redis_port": 6379}), report=lambda _: None)
    print("redis     ", redis.up(s))
    # Monitoring watches the chaos Redis (the one its scenarios kill), not the stack's: started
    # again with the chaos settings (local.up gave it the stack's Redis).
    monitoring.down(s)
    print("monitoring", monitoring.up(s))
    manifest = s.world_dir / "manifest.json"
    fresh = manifest.exists() and time.time() - manifest.stat().st_mtime < 6 * 3600
    if not fresh:
        end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        generate_world(s, WorldConfig(users=300, days=3, seed=5, end=end), replace=True)
        features_apply(s)
        features_materialize(s)
        train(s, heavy_params=HeavyParams(epochs=3))
    else:
        features_materialize(s)
    print("ray       ", ray_head.up(s))
    url = deploy(s, address=ray_head.address(s))
    # The edge's nginx (started by local.up on the chaos ports) is the gate in front of it.
    print("gate      ", s.gate_url, f"(at most {s.gate_max_inflight} in flight)")
    users = pd.read_parquet(s.world_dir / "users.parquet")[C.USER_ID].tolist()
    posts = pd.read_parquet(s.world_dir / "posts.parquet")[C.POST_ID].tolist()
    return url, users, posts


# -- helpers --------------------------------------------------------------------------------------


def replica_pids(s: Settings) -> list[int]:
    """Pids of this chaos head's feed replicas (their raylet runs in the head's temp folder)."""
    from stack import ray_head

    return ray_head.replica_pids(f"/tmp/ray-feedcast-{s.ray_port}")


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def summary(calls: list[Call]) -> dict[str, Any]:
    n = len(calls)
    return {
        "requests": n,
        "ok_share": sum(c.status == 200 for c in calls) / n if n else float("nan"),
        "server_errors": sum(c.status >= 500 for c in calls),
        "no_answer": sum(c.status == 0 for c in calls),
        "p50_ms": percentile_ms(calls, 50),
        "p99_ms": percentile_ms(calls, 99),
        # What went wrong, by the first try's status (0: no answer), for reading a failure.
        "first_try_failures": dict(
            sorted(Counter(str(c.first_status) for c in calls if c.first_status != 200).items())
        ),
        # Who answered the 5xx first tries, and why: their bodies' starts, the commonest three,
        # and when (seconds into the window).
        "server_error_bodies": dict(
            Counter(c.first_error for c in calls if c.first_status >= 500).most_common(3)
        ),
        "server_errors_at_s": [
            round(c.at - calls[0].at, 1) for c in calls if c.first_status >= 500
        ][:20],
    }


def clear_after(calls: list[Call], since: float, flag: str) -> float:
    """Seconds after ``since`` until answers stop carrying ``flag`` (the last one that did)."""
    flagged = [c.at for c in calls if c.at >= since and flag in c.degraded]
    return (max(flagged) - since) if flagged else 0.0


def result(name: str, figures: dict[str, Any], checks: dict[str, bool], why: str = "") -> dict:
    failed = [k for k, ok in checks.items() if not ok]
    return {
        "name": name,
        "passed": not failed,
        "figures": figures,
        "checks": checks,
        "why": why or ("; ".join(f"failed: {k}" for k in failed) if failed else ""),
    }


# -- scenarios ------------------------------------------------------------------------------------


class Suite:
    def __init__(self, s: Settings, url: str, users: list[int], posts: list[int], b: float):
        self.s, self.url, self.users, self.posts, self.b = s, url, users, posts, b
        self.events: list = []  # every event posted during scenarios 2–6
        self.baseline_p50_ms = float("nan")
        # scenario -> (fault, recovery), monotonic: what the alert timings count from
        self.marks: dict[str, tuple[float, float]] = {}

    def load(self, *, events: bool = True, retry: bool = False) -> Load:
        return Load(
            self.url, self.users, self.posts, self.b, event_rate=2.0 if events else 0.0, retry=retry
        ).start()

    def _keep(self, load: Load) -> None:
        self.events.extend(load.events)

    def baseline(self) -> dict:
        pids = replica_pids(self.s)
        load = self.load(events=False)
        time.sleep(10)  # warm: caches and the autoscaler settle
        rss0 = rss_mb(pids)
        t0 = time.monotonic()
        time.sleep(120)
        load.stop()
        rss1 = rss_mb(pids)
        fig = summary(load.window(t0, t0 + 120))
        self.baseline_p50_ms = fig["p50_ms"]
        drift = (rss1 - rss0) / rss0 if rss0 else float("nan")
        fig |= {"rss_start_mb": rss0, "rss_end_mb": rss1, "memory_drift": drift, "rate": self.b}
        return result(
            "baseline",
            fig,
            {"no 5xx": fig["server_errors"] == 0, "memory drift < 5%": bool(drift < 0.05)},
        )

    def redis_killed(self) -> dict:
        from stack import redis

        load = self.load()
        time.sleep(10)
        t_kill = time.monotonic()
        redis.down(self.s)
        time.sleep(60)
        t_back = time.monotonic()
        redis.up(self.s)
        self.marks["redis_killed"] = (t_kill, time.monotonic())
        time.sleep(20)
        load.stop()
        self._keep(load)
        during = load.window(t_kill + 2, t_back)  # the first seconds: connections noticing
        degraded_ok = [c for c in during if c.status == 200 and "features" in c.degraded]
        fig = summary(load.window(t_kill, t_back + 20))
        fig |= {
            "degraded_200_share": len(degraded_ok) / len(during) if during else float("nan"),
            "flag_cleared_after_s": clear_after(load.calls, t_back, "features"),
        }
        return result(
            "redis_killed_60s",
            fig,
            {
                "no 5xx": fig["server_errors"] == 0,
                "≥ 99% answered 200 degraded": fig["degraded_200_share"] >= 0.99,
                "flag clears within 10 s": fig["flag_cleared_after_s"] <= 10,
            },
        )

    def redis_frozen(self) -> dict:
        from stack import proc, redis

        pid = proc.read_pid(self.s.stack_dir, redis.name(self.s))
        if pid is None:
            return result("redis_frozen_30s", {}, {"redis pid known": False}, "no Redis pid file")
        load = self.load()
        time.sleep(10)
        t0 = time.monotonic()
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(30)
        finally:
            os.kill(pid, signal.SIGCONT)
        t1 = time.monotonic()
        time.sleep(10)
        load.stop()
        self._keep(load)
        fig = summary(load.window(t0, t1))
        fig["server_errors_after"] = summary(load.window(t1, t1 + 10))["server_errors"]
        return result(
            "redis_frozen_30s",
            fig,
            {
                "no 5xx": fig["server_errors"] + fig["server_errors_after"] == 0,
                "p99 < 300 ms": fig["p99_ms"] < 300,
            },
        )

    def cassandra_stopped(self) -> dict:
        from stack import cassandra

        load = self.load()
        time.sleep(10)
        t0 = time.monotonic()
        cassandra.down(self.s)
        t_down = time.monotonic()
        time.sleep(max(0.0, 120 - (t_down - t0)))
        t_start = time.monotonic()
        cassandra.up(self.s)
        t_back = time.monotonic()
        self.marks["cassandra_stopped"] = (t0, t_back)
        time.sleep(40)
        load.stop()
        self._keep(load)
        outage = load.window(t0, t_back)
        served = [c for c in outage if c.status == 200]
        fig = summary(load.window(t0, t_back + 40))
        fig |= {
            "outage_s": t_back - t0,
            "restart_s": t_back - t_start,
            "served_during_outage_share": len(served) / len(outage) if outage else float("nan"),
            "cached_or_popular_share": (
                sum("candidates" in c.degraded for c in served) / len(served)
                if served
                else float("nan")
            ),
            "fresh_after_s": clear_after(load.calls, t_back, "candidates"),
        }
        return result(
            "cassandra_stopped_120s",
            fig,
            {
                "no 5xx": fig["server_errors"] == 0,
                "cached or popular pages served": fig["served_during_outage_share"] >= 0.99,
                "fresh reads within 30 s": fig["fresh_after_s"] <= 30,
            },
        )

    def replica_killed(self) -> dict:
        load = self.load(retry=True)
        time.sleep(10)
        t0 = time.monotonic()
        killed = 0
        while time.monotonic() - t0 < 300:
            pids = replica_pids(self.s)
            if pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pids[0], signal.SIGKILL)
                    killed += 1
            time.sleep(30)
        t1 = time.monotonic()
        self.marks["replica_killed"] = (t0, t1)
        load.stop()
        self._keep(load)
        calls = load.window(t0, t1)
        n = len(calls)
        first_try = sum(c.status == 200 and not c.retried for c in calls)
        fig = summary(calls) | {
            "replicas_killed": killed,
            "success_with_one_retry": sum(c.status == 200 for c in calls) / n,
            "success_without_retry": first_try / n,
        }
        return result(
            "replica_killed_every_30s",
            fig,
            {"≥ 99.9% with one retry": fig["success_with_one_retry"] >= 0.999},
        )

    def overload(self) -> dict:
        load = Load(self.url, self.users, self.posts, self.b, event_rate=2.0).start()
        time.sleep(10)
        t0 = time.monotonic()
        load.set_rate(8 * self.b)  # B is half the capacity: 4× capacity
        time.sleep(30)
        t1 = time.monotonic()
        self.marks["overload"] = (t0, t1)
        load.set_rate(self.b)
        time.sleep(30)
        load.stop()
        self._keep(load)
        during = load.window(t0, t1)
        shed = [c for c in during if c.status in (429, 503)]
        after = load.window(t1, t1 + 30)
        recovered = float("nan")
        ref = self.baseline_p50_ms if np.isfinite(self.baseline_p50_ms) else None
        for k in range(30):
            sec = [c for c in after if t1 + k <= c.at < t1 + k + 1]
            if ref and sec and percentile_ms(sec, 50) <= 1.5 * ref:
                recovered = float(k)
                break
        fig = summary(during) | {
            "offered_rps": 8 * self.b,
            "shed_share": len(shed) / len(during) if during else float("nan"),
            "shed_p50_ms": percentile_ms(shed, 50),
            "shed_p90_ms": percentile_ms(shed, 90),
            "shed_p99_ms": percentile_ms(shed, 99),
            "shed_within_50ms_share": (
                sum(c.latency_s <= 0.05 for c in shed) / len(shed) if shed else float("nan")
            ),
            # The load generator shares the 2 cores: how late it sent its calls at 4×.
            "client_lag_p99_ms": float(np.percentile([c.lag_s for c in during], 99) * 1000)
            if during
            else float("nan"),
            "internal_errors": sum(c.status == 500 for c in during),
            "back_to_baseline_after_s": recovered,
        }
        return result(
            "overload_4x_30s",
            fig,
            {
                "excess shed with 503/429": len(shed) > 0,
                "shed within 50 ms (p99)": bool(fig["shed_p99_ms"] <= 50),
                "no 500": fig["internal_errors"] == 0,
                "baseline latency within 10 s": bool(recovered <= 10),
            },
        )

    def events_kept(self) -> dict:
        """Every event acknowledged during scenarios 2–6 is in Cassandra; re-sends collapse."""
        from core.db import connect

        acked = [e.event_id for e in self.events if 200 <= e.status < 300]
        cluster, session = connect(self.s)
        try:
            stmt = session.prepare("SELECT event_id FROM events_by_id WHERE event_id = ?")
            found = sum(session.execute(stmt, (i,), timeout=5).one() is not None for i in acked)
        finally:
            cluster.shutdown()
        sample = acked[:50]
        dupes = 0
        with httpx.Client(base_url=self.url, headers={"X-API-Key": DEV_API_KEY}, timeout=5) as c:
            for eid in sample:
                # The same id with other content is a conflict, and stored once either way.
                r = c.post(
                    "/v1/events",
                    json={
                        "events": [
                            {
                                "event_id": eid,
                                "user_id": self.users[0],
                                "post_id": self.posts[0],
                                "kind": "like",
                                "ts": datetime.now(UTC).isoformat(),
                            }
                        ]
                    },
                )
                body = r.json() if r.status_code == 200 else {}
                dupes += body.get("accepted", 1) == 0
        fig = {
            "posted": len(self.events),
            "acknowledged": len(acked),
            "lost": len(acked) - found,
            "resent": len(sample),
            "resent_collapsed": dupes,
        }
        return result(
            "events_acknowledged_kept",
            fig,
            {
                "0 lost": fig["lost"] == 0 and len(acked) > 0,
                "re-sends collapse": dupes == len(sample),
            },
        )


SCENARIOS = (
    "baseline",
    "redis_killed",
    "redis_frozen",
    "overload",
    "replica_killed",
    "cassandra_stopped",
    "events_kept",
    "uploads_2x",
    "upload_cpu_control",
    "upload_null_control",
    "uploads_2x_repeated",
    "cassandra_3_nodes",
    "hostile_input",
)
# ``make chaos``: the upload tier's bar judged by the repeated scenario; its one-shot form and
# its controls stay runnable by name (``python -m bench.chaos uploads_2x upload_null_control``).
DEFAULT = tuple(
    n for n in SCENARIOS if n not in ("uploads_2x", "upload_cpu_control", "upload_null_control")
)


def write(results: list[dict]) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    by_name = {r["name"]: r for r in old.get("scenarios", [])}
    by_name |= {r["name"]: r for r in results}
    alerts = old.get("alerts", {}) | {
        r["name"]: r["figures"]["alerts"] for r in results if "alerts" in r["figures"]
    }
    doc = {
        "at": datetime.now(UTC).isoformat(),
        "scenarios": list(by_name.values()),
        "alerts": alerts,  # scenario -> alert -> {fired_s, resolved_s, bound_s}
    }
    RESULTS.write_text(json.dumps(doc, indent=2, default=float))
    rows = []
    for r in doc["scenarios"]:
        figs = ", ".join(
            f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in r["figures"].items()
        )
        rows.append(
            f"| {r['name']} | {'pass' if r['passed'] else '**fail**'} | {figs} | {r['why']} |"
        )
    table = "\n".join(["| scenario | result | figures | why |", "|---|---|---|---|", *rows])
    text = DOC.read_text() if DOC.exists() else ""
    start, end = "<!-- chaos:begin -->", "<!-- chaos:end -->"
    block = f"{start}\nGenerated by `make chaos` at {doc['at'][:19]} UTC.\n\n{table}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = (text or "# Reliability\n\n") + block + "\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)


def _watched(s: Settings, suite: Suite, name: str, run: Callable[[], dict]) -> dict:
    """``run`` the scenario; for those the monitoring must see, with its alerts' timings
    (``bench/chaos_alerts.py``) among the figures and the checks."""
    expected = chaos_alerts.EXPECTED.get(name)
    if expected is None:
        return run()
    with chaos_alerts.Watch(s, expected) as watch:
        r = run()
        watch.wait_resolved()
    if name not in suite.marks:
        return r
    timings = watch.timings(*suite.marks[name])
    print(f"  alerts: {timings}")
    return result(
        r["name"], r["figures"] | {"alerts": timings},
        r["checks"] | chaos_alerts.checks(timings), r["why"] if not r["passed"] else "",
    )  # fmt: skip


def main(argv: list[str]) -> int:
    from stack import monitoring, nginx, ray_head, redis

    # Ray reads its token settings when first imported: export the stack's before anything
    # imports it, as the feedcast CLI does.
    ray_head.auth_env(Settings())

    only = argv or list(DEFAULT)
    unknown = [n for n in only if n not in SCENARIOS]
    if unknown:
        print(f"unknown scenarios {unknown}; choose from {', '.join(SCENARIOS)}", file=sys.stderr)
        return 2
    s = chaos_settings(Settings())
    results: list[dict] = []
    b = 1.0
    try:
        _, users, posts = bring_up(s)  # Ray Serve directly: not for callers
        # Callers come in through the gate, the service's front door, hostile ones too.
        cap = capacity(s.gate_url, users)
        b = max(cap / 2, 1.0)
        print(f"capacity {cap:.1f} req/s → B = {b:.1f} req/s")
        suite = Suite(s, s.gate_url, users, posts, b)
        runs: dict[str, Callable[[], dict]] = {
            "baseline": suite.baseline,
            "redis_killed": suite.redis_killed,
            "redis_frozen": suite.redis_frozen,
            "overload": suite.overload,
            "replica_killed": suite.replica_killed,
            "cassandra_stopped": suite.cassandra_stopped,
            "events_kept": suite.events_kept,
            "uploads_2x": lambda: result("uploads_2x_60s", *chaos_uploads.run(suite, summary)),
            "upload_cpu_control": lambda: result(
                "upload_cpu_control_60s", *chaos_uploads.run_cpu_control(suite, summary)
            ),
            "upload_null_control": lambda: result(
                "upload_null_control_60s", *chaos_uploads.run_null_control(suite, summary)
            ),
            "uploads_2x_repeated": lambda: result(
                "uploads_2x_repeated", *chaos_uploads.run_repeated(suite, summary)
            ),
        }
        for name in only:
            if name in runs:
                print(f"— {name}")
                try:
                    r = _watched(s, suite, name, runs[name])
                except Exception as exc:  # a scenario that breaks is a failed scenario, said so
                    r = result(name, {}, {"ran to the end": False}, f"{type(exc).__name__}: {exc}")
                r["figures"]["capacity_rps"] = cap
                results.append(r)
                print(json.dumps(r, default=float))
                write(results)
        if "hostile_input" in only:
            from bench import chaos_hostile

            results.append(chaos_hostile.run(s, s.gate_url))
            write(results)
    finally:
        import ray

        # Disconnect before the head goes: a driver still attached when it is killed can
        # segfault in Ray's threads (seen once, ending the suite before the 3-node scenario).
        ray.shutdown()
        ray_head.down(s)
        redis.down(s)
        nginx.down(s)
        monitoring.down(s)
    if "cassandra_3_nodes" in only:
        from bench import chaos_cluster

        results.append(chaos_cluster.run(s, rate=b))
        write(results)
    failed = [r["name"] for r in results if not r["passed"]]
    print(f"chaos: {len(results) - len(failed)} passed, {len(failed)} failed {failed or ''}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
