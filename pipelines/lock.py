"""One run at a time, cluster-wide: a lock in Redis that a pipeline run holds while it works.

The lock is one key, ``feedcast:{feast_project}:lock:{name}``, set with ``SET NX PX`` to a JSON
record of its holder (host, pid, run id, since, and a random token). While held, a daemon
thread renews it every third of its TTL; a holder that dies stops renewing, so its lock frees
after at most one TTL. Renewing and releasing compare the token first (in Lua, atomically), so a
run never extends or deletes a lock it no longer holds. A run that finds its lock gone or taken
(Redis lost it, or was unreachable past the TTL and someone else took it) marks it lost, and
:meth:`RunLock.check` raises :class:`LockLost`: the flow calls it between steps and stops rather
than work alongside another run.

    with RunLock(settings, owner={"run_id": run_id}) as lock:
        export(...)
        lock.check()
        train(...)
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import redis

from core import cache
from core.settings import Settings

log = logging.getLogger(__name__)

# KEYS[1] the lock, ARGV[1] our token, ARGV[2] the TTL (ms). 1: ours and extended; 0: not ours.
_RENEW = """
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
if cjson.decode(v)['token'] ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""
# KEYS[1] the lock, ARGV[1] our token. 1: ours and deleted; 0: not ours, left alone.
_RELEASE = """
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
if cjson.decode(v)['token'] ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""


class LockHeld(RuntimeError):
    """Another run holds the lock; ``holder`` says who (see :func:`holder`)."""

    def __init__(self, message: str, holder: dict[str, Any]) -> None:
        super().__init__(message)
        self.holder = holder


class LockLost(RuntimeError):
    """The lock of a live run expired or was taken: the run must stop."""


class LockUnavailable(RuntimeError):
    """Redis did not answer, so whether another run holds the lock is unknown."""


def lock_key(settings: Settings, name: str) -> str:
    """Per deployment (the Feast project), like every other feedcast key in Redis."""
    return f"feedcast:{settings.feast_project}:lock:{name}"


def holder(settings: Settings, name: str = "retrain") -> dict[str, Any] | None:
    """Who holds the lock ``name`` (host, pid, run_id, since, expires_in_s), or None."""
    r = cache.client(settings)
    try:
        return _read_holder(r, lock_key(settings, name))
    except redis.RedisError as exc:
        raise _unavailable(settings, name, exc) from exc
    finally:
        r.close()


def describe(info: dict[str, Any], name: str = "retrain") -> str:
    """One line naming the holder of the lock ``name``."""
    since = str(info.get("since", "?"))
    with_seconds = since[11:19] + " UTC" if len(since) >= 19 else since
    return (
        f"a {name} run is already going: run {info.get('run_id') or '?'} on host "
        f"{info.get('host', '?')} pid {info.get('pid', '?')} since {with_seconds} "
        f"(lock expires in {info.get('expires_in_s', '?')} s unless renewed)"
    )


class RunLock:
    """The Redis lock ``name`` of this deployment, held as a context manager.

    Args:
        settings: Redis address and timeouts, the project that names the key, the default TTL.
        name: What runs one at a time ("retrain").
        owner: Recorded with the lock for whoever finds it held; ``run_id`` is shown.
        ttl_s: Lifetime of the key without renewal; default ``settings.pipeline_lock_ttl_s``.
    """

    def __init__(
        self,
        settings: Settings,
        name: str = "retrain",
        *,
        owner: dict[str, Any] | None = None,
        ttl_s: float | None = None,
    ) -> None:
        self.settings = settings
        self.name = name
        self.key = lock_key(settings, name)
        self.ttl_s = ttl_s if ttl_s is not None else settings.pipeline_lock_ttl_s
        if self.ttl_s <= 0:
            raise ValueError(f"lock TTL must be positive, got {self.ttl_s}")
        self.owner = dict(owner or {})
        self.token = uuid.uuid4().hex
        self._redis: redis.Redis | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._state = threading.Lock()
        self._lost: str | None = None
        self._confirmed = 0.0  # monotonic time Redis last confirmed the lock is ours

    @property
    def _ttl_ms(self) -> int:
        return max(1, round(self.ttl_s * 1000))

    def acquire(self) -> RunLock:
        """Take the lock or raise :class:`LockHeld` (naming the holder) or
        :class:`LockUnavailable` (Redis not answering); then keep renewing it."""
        if self._redis is not None:
            raise RuntimeError(f"the {self.name} lock is already held by this RunLock")
        value = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "run_id": None,
            **self.owner,
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
            "token": self.token,
        }
        r = cache.client(self.settings)
        try:
            # A holder that expires between our SET and GET leaves nothing to name: try again.
            for _ in range(3):
                if r.set(self.key, json.dumps(value), nx=True, px=self._ttl_ms):
                    break
                if (info := _read_holder(r, self.key)) is not None:
                    raise LockHeld(describe(info, self.name), info)
            else:
                raise LockHeld(f"the {self.name} lock changed hands while being taken", {})
        except redis.RedisError as exc:
            r.close()
            raise _unavailable(self.settings, self.name, exc) from exc
        except LockHeld:
            r.close()
            raise
        self._redis, self._lost, self._stop = r, None, threading.Event()
        self._confirmed = time.monotonic()
        self._thread = threading.Thread(
            target=self._renew_loop, name=f"lock-{self.name}", daemon=True
        )
        self._thread.start()
        log.info("took the %s lock %s (TTL %.0f s)", self.name, self.key, self.ttl_s)
        return self

    def check(self) -> None:
        """Raise :class:`LockLost` when this run no longer holds its lock (asks Redis now).

        Call it between steps: a step under way is not interrupted, the next one is not begun.
        """
        if self._redis is None and self._lost is None:
            raise LockLost(f"the {self.name} lock is not held (never taken, or released)")
        self._renew()
        if self._lost is not None:
            raise LockLost(self._lost)

    @property
    def lost(self) -> bool:
        return self._lost is not None

    def release(self) -> None:
        """Stop renewing and delete the key if it is still ours (never another holder's)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.redis_timeout_s * 4 + 1)
        r, self._redis = self._redis, None
        if r is None:
            return
        try:
            if not r.eval(_RELEASE, 1, self.key, self.token) and self._lost is None:
                log.warning("the %s lock had expired or was taken before release", self.name)
        except redis.RedisError as exc:  # the key expires by itself within its TTL
            log.warning("could not release the %s lock (%s); it expires by itself", self.name, exc)
        finally:
            r.close()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl_s / 3) and self._lost is None:
            self._renew()

    def _renew(self) -> None:
        """Extend the lock if it is ours; mark it lost if it is not, or if Redis has not
        confirmed it for a whole TTL (it has expired by now, and another run may hold it)."""
        r = self._redis
        with self._state:
            if self._lost is not None or r is None:
                return
            try:
                ours = bool(r.eval(_RENEW, 1, self.key, self.token, self._ttl_ms))
            except redis.RedisError as exc:
                if time.monotonic() - self._confirmed >= self.ttl_s:
                    self._lost = (
                        f"the {self.name} lock could not be renewed for {self.ttl_s:g} s "
                        f"(Redis at {self.settings.redis_url}: {exc}); it has expired"
                    )
                else:
                    log.warning("renewing the %s lock failed, retrying: %s", self.name, exc)
                return
            if ours:
                self._confirmed = time.monotonic()
                return
            try:
                info = _read_holder(r, self.key)
            except redis.RedisError:
                info = None
            self._lost = f"the {self.name} lock {self.key} expired or was deleted" + (
                f"; now {describe(info, self.name)}" if info else ""
            )
            log.error("%s: this run must stop", self._lost)


def _read_holder(r: redis.Redis, key: str) -> dict[str, Any] | None:
    with r.pipeline(transaction=True) as p:
        p.get(key)
        p.pttl(key)
        raw, pttl = p.execute()
    if raw is None:
        return None
    try:
        info: dict[str, Any] = json.loads(raw)
    except ValueError:
        info = {"run_id": f"<unreadable lock value {raw!r}>"}
    info.pop("token", None)
    info["expires_in_s"] = round(pttl / 1000) if pttl >= 0 else None
    return info


def _unavailable(settings: Settings, name: str, exc: Exception) -> LockUnavailable:
    return LockUnavailable(
        f"cannot take or read the {name} lock: Redis at {settings.redis_url} is not answering "
        f"within {settings.redis_timeout_s:g} s ({type(exc).__name__}: {exc})"
    )
