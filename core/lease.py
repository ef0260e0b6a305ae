"""The feed's replica-floor lease: a floor of feed replicas that lapses on its own.

The alert responder (``pipelines/responder.py``) grants one when the live request rate leaves
the forecast band upwards; the feed's autoscaling policy (``serving/autoscaling.py``, in the
Serve controller) reads it and keeps at least that many replicas, on top of whatever the
capacity plan or Ray's own rule asks (the maximum of them). The lease is one Redis key with its
own expiry, so nothing has to remember to take it back: it lapses ``ttl_s`` after the last grant
even if the responder is gone. ``feedcast ops release`` ends it sooner.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

import redis

from core.settings import Settings


@dataclass(frozen=True)
class Lease:
    replicas: int
    until: float  # epoch s
    alert: str  # what caused it
    granted_at: float  # epoch s


def lease_key(s: Settings) -> str:
    return f"feedcast:{s.feast_project}:ops:lease:feed"


def parse(raw: Any, now: float) -> Lease | None:
    """A stored lease still in force at ``now``; None for none, an expired or a garbled one."""
    if not isinstance(raw, bytes | str):
        return None
    try:
        d = json.loads(raw)
        lease = Lease(
            int(d["replicas"]), float(d["until"]), str(d["alert"]), float(d["granted_at"])
        )
    except (ValueError, KeyError, TypeError):
        return None
    return lease if lease.replicas >= 1 and lease.until > now else None


def current(client: redis.Redis, key: str, now: float | None = None) -> Lease | None:
    return parse(client.get(key), time.time() if now is None else now)


def grant(
    client: redis.Redis, key: str, replicas: int, ttl_s: float, alert: str
) -> tuple[Lease, Lease | None]:
    """A lease of ``replicas`` for ``ttl_s`` from now, never below one still in force (a
    second grant extends and may raise it, never lowers it); the new lease and the old."""
    if replicas < 1 or ttl_s <= 0:
        raise ValueError("a lease needs at least one replica and a positive duration")
    now = time.time()
    old = current(client, key, now)
    lease = Lease(max(replicas, old.replicas if old else 0), now + ttl_s, alert, now)
    client.set(key, json.dumps(asdict(lease)), px=max(1, int(ttl_s * 1000)))
    return lease, old


def release(client: redis.Redis, key: str) -> Lease | None:
    """End the lease now; the one that was in force, if any."""
    old = current(client, key)
    client.delete(key)
    return old
