"""Chaos scenario 8: a Cassandra replica dies under load and nobody notices.

A 3-node cluster on loopback (``stack/cassandra_cluster.py``, 127.0.0.2–127.0.0.4), a small world
in keyspace ``feedcast_chaos3`` replicated 3 times, reads and writes at LOCAL_QUORUM, the feed
deployed on its own port. Open-loop feed requests and engagement events run for ``duration_s``;
a third of the way in node 3 is SIGKILLed (a crash: no drain, no shutdown announced to its peers
or to the driver) and stays down. ``how="freeze"`` SIGSTOPs it instead: a hung node (a long GC
pause, a partition) whose connections stay open and silent, until SIGCONT at the end;
``how="none"`` is the control: the same run with no fault, to tell the node's effect apart from
the machine's. Then:

- failed feed requests: any answer but 200, or none;
- acknowledged events (2xx) looked up by id in ``events_by_id`` at LOCAL_QUORUM, through the two
  live nodes: lost = acknowledged − found;
- a sample of acknowledged events sent again, as stored: the API must call every one a duplicate,
  and ``interactions_by_post`` must hold one row of each, not two.

Node 3 is started again at the end (hints replayed), then the cluster is stopped if this run
started it.
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections import Counter
from typing import Any, Literal

import httpx
import numpy as np
import pandas as pd

from bench.chaos_load import Call, Load, capacity, percentile_ms
from core import constants as C
from core.settings import DEV_API_KEY, Settings
from stack import cassandra_cluster, proc

NAME = "cassandra_3_nodes"
NODES = 3
SERVE_PORT = 8034
REDIS_PORT = 6393
EVENT_RATE = 5.0
RESEND_SAMPLE = 40
HTTP_TIMEOUT_S = 10.0
CQL_TIMEOUT_S = 5.0


def chaos3_settings(base: Settings) -> Settings:
    return base.model_copy(
        update={
            "cassandra_hosts": cassandra_cluster.hosts(NODES),
            "cassandra_port": cassandra_cluster.NATIVE_PORT,
            "cassandra_keyspace": "feedcast_chaos3",
            "cassandra_replication_factor": 3,
            "cassandra_read_consistency": "LOCAL_QUORUM",
            "cassandra_write_consistency": "LOCAL_QUORUM",
            "feast_project": "chaos3",
            "model_name": "feed_ranker_chaos3",
            "heavy_model_name": "feed_ranker_heavy_chaos3",
            "experiment": "feedcast-chaos3",
            "data_dir": base.home / "chaos3",
            "serve_port": SERVE_PORT,
            "serve_haproxy_ports": None,  # serve_port + 1 and + 2, not the chaos head's pair
            "redis_port": REDIS_PORT,
            # The load generator is one key: the rate limit is not what is tested here.
            "rate_limit_per_s": 100_000.0,
            "rate_limit_burst": 100_000,
            # Two replicas throughout, as where the suite measured the rate it passes in; no
            # autoscaler step (a second disturbance).
            "serve_min_replicas": 2,
            "serve_max_replicas": 2,
        }
    )


def _world(s: Settings) -> tuple[list[int], list[int]]:
    """Generate, materialize and train the scenario's world (reused within the hour it was
    built for while its keyspace still holds it); the readers and posts the load uses."""
    from pipelines.steps import features_apply, features_materialize, generate_world, train
    from simulator.config import WorldConfig
    from training.heavy import HeavyParams

    config = WorldConfig(users=300, days=3, seed=0)
    manifest, done = s.world_dir / "manifest.json", s.world_dir / "chaos3-ready"
    if not (
        done.exists()
        and manifest.exists()
        and json.loads(manifest.read_text())["config"] == json.loads(config.model_dump_json())
        and _holds_users(s)
    ):
        done.unlink(missing_ok=True)
        generate_world(s, config, replace=True)
        features_apply(s)
        features_materialize(s)
        train(s, heavy_params=HeavyParams(epochs=1))
        done.touch()
    follows = pd.read_parquet(s.world_dir / "follows.parquet", columns=[C.USER_ID])
    posts = pd.read_parquet(s.world_dir / "posts.parquet", columns=[C.POST_ID])
    return sorted({int(u) for u in follows[C.USER_ID]}), [int(p) for p in posts[C.POST_ID]]


def _holds_users(s: Settings) -> bool:
    from core.db import connect

    try:
        cluster, session = connect(s)
    except Exception:  # no keyspace yet (a fresh cluster)
        return False
    try:
        rows = session.execute("SELECT user_id FROM users_by_id LIMIT 1", timeout=CQL_TIMEOUT_S)
        return rows.one() is not None
    except Exception:  # no table yet
        return False
    finally:
        cluster.shutdown()


def _stored(s: Settings, ids: list[str]) -> dict[str, Any]:
    """The ``events_by_id`` rows of ``ids`` read at LOCAL_QUORUM through the live nodes 1, 2."""
    from cassandra.concurrent import execute_concurrent_with_args

    from core.db import connect, consistency

    live = s.model_copy(update={"cassandra_hosts": cassandra_cluster.hosts(NODES)[:2]})
    cluster, session = connect(live)
    try:
        stmt = session.prepare(
            "SELECT event_id, user_id, post_id, kind, event_ts, dwell_s FROM events_by_id "
            "WHERE event_id = ?"
        )
        stmt.consistency_level = consistency("LOCAL_QUORUM")
        results = execute_concurrent_with_args(
            session, stmt, [(i,) for i in ids], concurrency=32, raise_on_first_error=True
        )
        return {r.event_id: r for _, rows in results for r in rows}
    finally:
        cluster.shutdown()


def _resend(s: Settings, rows: list[Any]) -> dict[str, Any]:
    """Send ``rows`` (stored events) again as they were stored; what the API and the
    interaction table say of them."""
    from core.db import connect

    payload = {
        "events": [
            {
                "event_id": r.event_id,
                "user_id": r.user_id,
                "post_id": r.post_id,
                "kind": r.kind,
                "ts": r.event_ts.isoformat() + ("" if r.event_ts.tzinfo else "Z"),
                **({"dwell_s": r.dwell_s} if r.dwell_s is not None else {}),
            }
            for r in rows
        ]
    }
    answer = httpx.post(
        f"{s.serve_url}/v1/events",
        json=payload,
        headers={"X-API-Key": DEV_API_KEY},
        timeout=HTTP_TIMEOUT_S,
    )
    body = answer.json() if answer.status_code == 200 else {}
    live = s.model_copy(update={"cassandra_hosts": cassandra_cluster.hosts(NODES)[:2]})
    cluster, session = connect(live)
    try:
        stmt = session.prepare("SELECT event_id FROM interactions_by_post WHERE post_id = ?")
        copies = Counter[str]()
        for r in rows:
            for found in session.execute(stmt, (r.post_id,), timeout=CQL_TIMEOUT_S):
                if found.event_id == r.event_id:
                    copies[r.event_id] += 1
    finally:
        cluster.shutdown()
    return {
        "resent": len(rows),
        "resend_status": answer.status_code,
        "resend_duplicates": body.get("duplicates"),
        "resend_accepted": body.get("accepted"),
        "resend_conflicts": len(body.get("conflicts", [])),
        "resend_rows_not_one": sum(1 for r in rows if copies[r.event_id] != 1),
    }


def _feed_figures(calls: list[Call], kill_at: float) -> dict[str, Any]:
    before = [c for c in calls if c.at < kill_at]
    after = [c for c in calls if c.at >= kill_at]
    first10 = [c for c in after if c.at < kill_at + 10]

    def failed(cs: list[Call]) -> int:
        return sum(1 for c in cs if c.status != 200)

    def degraded(cs: list[Call]) -> int:
        return sum(1 for c in cs if "candidates" in c.degraded)

    return {
        "feed_requests": len(calls),
        "feed_failed": failed(calls),
        "feed_failed_before_kill": failed(before),
        "feed_failed_after_kill": failed(after),
        "feed_failed_first_10s_after_kill": failed(first10),
        "feed_statuses": {str(k): v for k, v in sorted(Counter(c.status for c in calls).items())},
        # When the failures were due, in seconds from the kill (the first 20).
        "feed_failed_at_s": [round(c.at - kill_at, 1) for c in calls if c.status != 200][:20],
        "feed_degraded_candidates_before_kill": degraded(before),
        "feed_degraded_candidates_after_kill": degraded(after),
        "feed_p50_ms_before_kill": percentile_ms(before, 50),
        "feed_p99_ms_before_kill": percentile_ms(before, 99),
        "feed_p50_ms_after_kill": percentile_ms(after, 50),
        "feed_p99_ms_after_kill": percentile_ms(after, 99),
        "feed_p99_ms_first_10s_after_kill": percentile_ms(first10, 99),
    }


_DONE = {
    "SIGKILL": "SIGKILLed and left down",
    "SIGSTOP": "SIGSTOPped (hung) to the end",
    None: "left alone (control run)",
}


def _verdict(f: dict[str, Any]) -> tuple[bool, str]:
    problems = []
    if f["feed_requests"] == 0 or f["events_acked"] == 0:
        problems.append("no load got through: nothing was tested")
    if f["feed_failed"]:
        problems.append(f"{f['feed_failed']} feed requests failed ({f['feed_statuses']})")
    if f["events_failed"]:
        problems.append(f"{f['events_failed']} events were not acknowledged")
    if f["events_lost"]:
        problems.append(f"{f['events_lost']} acknowledged events are not in events_by_id")
    if f["resend_duplicates"] != f["resent"] or f["resend_rows_not_one"]:
        problems.append(
            f"re-sent events: {f['resend_duplicates']} of {f['resent']} called duplicates, "
            f"{f['resend_rows_not_one']} without exactly one interaction row"
        )
    if problems:
        return False, "; ".join(problems)
    return True, (
        f"node 3 {_DONE[f['kill_signal']]} at {f['kill_at_s']:.0f} s: {f['feed_requests']} "
        f"feed requests all 200 (p99 {f['feed_p99_ms_before_kill']:.0f} ms before, "
        f"{f['feed_p99_ms_after_kill']:.0f} ms after; "
        f"{f['feed_degraded_candidates_after_kill']} served from a fallback after the kill, "
        f"{f['feed_degraded_candidates_before_kill']} before), {f['events_acked']} events "
        f"acknowledged, all found at LOCAL_QUORUM on the two live nodes; "
        f"{f['resent']} re-sent, all recognised as duplicates"
    )


def run(
    settings: Settings,
    *,
    rate: float,
    duration_s: float = 90,
    how: Literal["kill", "freeze", "none"] = "kill",
) -> dict[str, Any]:
    """Returns {"name": "cassandra_3_nodes", "passed": bool, "figures": {...}, "why": str}."""
    import ray
    from ray import serve

    from serving.deploy import deploy
    from stack import redis as stack_redis

    s = chaos3_settings(settings)
    if ray.is_initialized():  # the Ray of an earlier scenario (its head may be gone): not ours
        ray.shutdown()
    sig = signal.SIGKILL if how == "kill" else signal.SIGSTOP
    figures: dict[str, Any] = {"nodes": NODES, "kill_signal": sig.name if how != "none" else None}
    t0 = time.monotonic()
    started = cassandra_cluster.up(s, NODES)
    figures["cluster_start_s"] = round(time.monotonic() - t0, 1)
    figures["node_start_s"] = {k: v and round(v, 1) for k, v in started.items()}
    we_started_cluster = any(v is not None for v in started.values())
    we_started_redis = stack_redis.up(s).startswith("started")
    victim = cassandra_cluster.nodes(NODES)[-1]
    try:
        t0 = time.monotonic()
        users, posts = _world(s)
        figures["world_and_training_s"] = round(time.monotonic() - t0, 1)
        url = deploy(s, address="local")
        try:
            with httpx.Client(headers={"X-API-Key": DEV_API_KEY}, timeout=HTTP_TIMEOUT_S) as c:
                for u in users[:20]:  # warm: connections, caches, the model
                    c.get(f"{url}/v1/feed/{u}", params={"limit": 10})
            # B is half of what the system under test serves: three Cassandra JVMs on the same
            # two cores serve less than the one node the suite measured, so the scenario runs
            # at half of this deployment's own capacity when that is lower (it tests a node's
            # failure, not an overload).
            figures["suite_rps"] = rate
            figures["capacity_rps_3_nodes"] = round(capacity(url, users), 1)
            rate = min(rate, max(figures["capacity_rps_3_nodes"] / 2, 1.0))
            load = Load(url, users, posts, rate=rate, event_rate=EVENT_RATE).start()
            start = time.monotonic()
            time.sleep(duration_s / 3)
            kill_at = time.monotonic()
            if how == "kill":
                figures["killed_pid"] = cassandra_cluster.kill_node(s, victim)
            elif how == "freeze":
                figures["frozen_pid"] = cassandra_cluster.signal_node(s, victim, sig)
            figures["kill_at_s"] = round(kill_at - start, 1)
            time.sleep(max(0.0, start + duration_s - time.monotonic()))
            load.stop()
            acked = [e for e in load.events if 200 <= e.status < 300]
            stored = _stored(s, [e.event_id for e in acked])
            after = [stored[e.event_id] for e in acked if e.at >= kill_at and e.event_id in stored]
            rng = np.random.default_rng(0)
            sample = [after[i] for i in rng.permutation(len(after))[:RESEND_SAMPLE]]
            figures |= _feed_figures(load.calls, kill_at)
            figures |= {
                "offered_rps": rate,
                "duration_s": duration_s,
                "events_sent": len(load.events),
                "events_acked": len(acked),
                "events_acked_after_kill": sum(1 for e in acked if e.at >= kill_at),
                "events_failed": len(load.events) - len(acked),
                "events_failed_at_s": [
                    round(e.at - kill_at, 1) for e in load.events if not 200 <= e.status < 300
                ][:20],
                "events_found": len(stored),
                "events_lost": len(acked) - len(stored),
            }
            figures |= _resend(s, sample)
        finally:
            serve.shutdown()
            ray.shutdown()
        t0 = time.monotonic()
        if how == "freeze":
            cassandra_cluster.signal_node(s, victim, signal.SIGCONT)
            cassandra_cluster.wait_ready(s, NODES)
        else:
            cassandra_cluster.start_node(s, victim, NODES)
        figures["node3_back_s"] = round(time.monotonic() - t0, 1)
    finally:
        with contextlib.suppress(proc.StackError):  # a frozen node would not even stop
            cassandra_cluster.signal_node(s, victim, signal.SIGCONT)
        if not we_started_cluster:  # leave a reused cluster whole
            cassandra_cluster.start_node(s, victim, NODES)
        if we_started_redis:
            stack_redis.down(s)
        if we_started_cluster:
            cassandra_cluster.down(s, NODES)
    passed, why = _verdict(figures)
    return {"name": NAME, "passed": passed, "figures": figures, "why": why}


if __name__ == "__main__":
    import sys

    # python -m bench.chaos_cluster [rate] [duration_s] [kill|freeze|none]
    rate = float(sys.argv[1]) if len(sys.argv) > 1 else 20.0
    duration = float(sys.argv[2]) if len(sys.argv) > 2 else 90.0
    how: Literal["kill", "freeze", "none"] = "kill"
    if sys.argv[3:4] in (["freeze"], ["none"]):
        how = "freeze" if sys.argv[3] == "freeze" else "none"
    result = run(Settings(), rate=rate, duration_s=duration, how=how)
    print(json.dumps(result, indent=2, default=str))
