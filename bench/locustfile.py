"""Locust users for ``bench/serve.py`` (run headless in a process of its own, never imported).

Each simulated client asks at a constant rate (``BENCH_USER_RPS``), whatever the answers take:
with many clients, each idle most of the time, the arrivals are close to open loop.

Environment (set by ``bench/serve.py``):
    BENCH_TARGET: ``feed`` (``/v1/feed/{user}``) or ``noop`` (the Ray Serve floor).
    BENCH_USER_RPS: requests per second of one simulated client.
    BENCH_USERS: path of a file of reader ids, one per line.
    BENCH_API_KEY: the key sent in ``X-API-Key``.
    BENCH_DETAIL: path where the per-run detail (candidates, degraded steps) is written as JSON.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from pathlib import Path
from typing import Any

from locust import FastHttpUser, constant_throughput, events, task

TARGET = os.environ.get("BENCH_TARGET", "feed")
USERS = [int(x) for x in Path(os.environ["BENCH_USERS"]).read_text().split()]
API_KEY = os.environ.get("BENCH_API_KEY", "")
DETAIL: dict[str, Any] = {"candidates": [], "degraded": Counter(), "pages": 0}


class Client(FastHttpUser):
    wait_time = constant_throughput(float(os.environ.get("BENCH_USER_RPS", "2")))

    @task
    def ask(self) -> None:
        if TARGET == "noop":
            self.client.get("/noop/", name="noop")
            return
        user = random.choice(USERS)
        with self.client.get(
            f"/v1/feed/{user}?limit=20",
            name="feed",
            headers={"X-API-Key": API_KEY},
            catch_response=True,
        ) as r:
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}")
                return
            body = r.json()
            DETAIL["pages"] += 1
            DETAIL["candidates"].append(body["candidates"])
            DETAIL["degraded"].update(body["degraded"])


@events.test_stop.add_listener
def _write_detail(**_: Any) -> None:
    out = os.environ.get("BENCH_DETAIL")
    if out:
        c = DETAIL["candidates"]
        Path(out).write_text(
            json.dumps(
                {
                    "pages": DETAIL["pages"],
                    "mean_candidates": sum(c) / len(c) if c else 0.0,
                    "min_candidates": min(c) if c else 0,
                    "degraded": dict(DETAIL["degraded"]),
                }
            )
        )
