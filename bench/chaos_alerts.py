"""Alert timings in ``make chaos``: for the scenarios that break something the monitoring
should see (Redis killed, Cassandra stopped, overload, replica kills), when the matching alert
fired after the fault and when it resolved after the recovery, read from the chaos stack's own
Prometheus (its rules as in production: ``monitoring/rules.yml``, every ``for`` unscaled).

A :class:`Watch` polls ``ALERTS{alertstate="firing"}`` once a second in a thread from before the
scenario starts until every expected alert has fired and resolved, or ``settle_s`` after the
scenario ended. The scenario marks the fault and the recovery (``Suite.marks``, monotonic
seconds); ``chaos.json`` gets ``alerts`` → scenario → alert → ``{fired_s, resolved_s, bound_s}``
(``fired_s`` from the fault to its first firing, ``resolved_s`` from the recovery to the last
time it stopped firing; ``None`` where it did not happen; an alert that toggles during a
scenario, as replica kills every 30 s make it, may end before the recovery: negative).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx

from core.settings import Settings
from stack import monitoring

# scenario -> the alerts it must raise, each with the bound its `fires_within` documents (s,
# from the fault, at the 5 s scrape and evaluation interval)
EXPECTED: dict[str, dict[str, float]] = {
    "redis_killed": {"RedisDown": 45.0, "RedisUnreachable": 60.0},
    "cassandra_stopped": {"CassandraNodeDown": 75.0, "CassandraUnavailable": 60.0},
    "overload": {"FeedOverloaded": 30.0},
    "replica_killed": {"FeedReplicasDown": 45.0},
}


class Watch:
    def __init__(self, s: Settings, expected: dict[str, float], settle_s: float = 240.0) -> None:
        self.s, self.expected, self.settle_s = s, expected, settle_s
        self.fired: dict[str, float] = {}
        self.resolved: dict[str, float] = {}
        self.errors = 0
        self._done = threading.Event()
        self._before: set[str] = set()
        self._thread = threading.Thread(target=self._poll, name="alert-watch", daemon=True)

    def __enter__(self) -> Watch:
        self._before = self._firing() or set()  # already firing: not this scenario's doing
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=5)

    def _firing(self) -> set[str] | None:
        try:
            rows = monitoring.query(self.s, 'ALERTS{alertstate="firing"}', timeout_s=3.0)
        except (httpx.HTTPError, RuntimeError):
            self.errors += 1
            return None
        return {r["metric"].get("alertname", "") for r in rows}

    def _poll(self) -> None:
        while not self._done.wait(1.0):
            firing = self._firing()
            if firing is not None:
                self.observe(time.monotonic(), firing)

    def observe(self, now: float, firing: set[str]) -> None:
        """One poll: an expected alert's first firing, and the last time it stopped (an alert
        that fires again after resolving is not resolved until it stops again)."""
        for name in self.expected:
            if name in firing and name not in self._before:
                self.fired.setdefault(name, now)
                self.resolved.pop(name, None)
            elif name in self.fired and name not in self.resolved:
                self.resolved[name] = now

    def wait_resolved(self) -> None:
        """After the scenario: until each expected alert fired and resolved, or ``settle_s``."""
        end = time.monotonic() + self.settle_s
        while time.monotonic() < end:
            if all(n in self.resolved for n in self.expected):
                return
            time.sleep(1.0)

    def timings(self, fault: float, recovered: float) -> dict[str, dict[str, Any]]:
        out = {}
        for name, bound in self.expected.items():
            fired = self.fired.get(name)
            resolved = self.resolved.get(name)
            out[name] = {
                "fired_s": None if fired is None else round(fired - fault, 1),
                "resolved_s": None if resolved is None else round(resolved - recovered, 1),
                "bound_s": bound,
            }
        return out


def checks(timings: dict[str, dict[str, Any]]) -> dict[str, bool]:
    """Each expected alert fired within its bound and resolved after the recovery."""
    out = {}
    for name, t in timings.items():
        out[f"{name} fires within {t['bound_s']:g} s"] = (
            t["fired_s"] is not None and t["fired_s"] <= t["bound_s"]
        )
        out[f"{name} resolves after recovery"] = t["resolved_s"] is not None
    return out
