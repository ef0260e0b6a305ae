"""API keys, a per-key rate limit shared by every replica, and a request body size limit.

Nothing here keeps state that replicas would need to share: keys are checked against hashes
from :class:`~core.settings.Settings`, and the rate limit lives in Redis, updated by one atomic
Lua script that reads Redis' own clock, so replicas on different nodes (and clocks) agree.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import redis
from redis.exceptions import NoScriptError, RedisError

from core import cache
from core.breaker import Breaker
from core.cache import BreakerOpen
from core.settings import DEV_API_KEY, DEV_API_KEY_HASH, Settings

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "DEV_API_KEY",
    "DEV_API_KEY_HASH",
    "ApiKeys",
    "BodyLimit",
    "Decision",
    "RateLimiter",
    "hash_key",
    "new_key",
    "redis_client",
]

log = logging.getLogger("feedcast.security")

HASH_PREFIX = "sha256:"
KEY_ID_LEN = 12
MAX_KEY_LEN = 256  # longer presented values are refused before hashing


def hash_key(key: str) -> str:
    """The stored form of an API key: ``'sha256:' + hex digest`` of its UTF-8 bytes."""
    return HASH_PREFIX + hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh random API key and its hash: give the key to the caller, store only the hash."""
    key = "fc_" + secrets.token_urlsafe(32)
    return key, hash_key(key)


class ApiKeys:
    """The accepted API keys, known only by their SHA-256 hashes."""

    def __init__(self, hashes: Iterable[str]) -> None:
        digests = []
        for h in hashes:
            hex_ = h.strip().lower().removeprefix(HASH_PREFIX)
            if len(hex_) != 64 or any(c not in "0123456789abcdef" for c in hex_):
                raise ValueError("an API key hash must be 'sha256:' and 64 hex digits")
            digests.append(bytes.fromhex(hex_))
        self._digests = tuple(dict.fromkeys(digests))

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiKeys:
        return cls(settings.api_key_hashes)

    def __len__(self) -> int:
        return len(self._digests)

    def identify(self, presented: str | None) -> str | None:
        """The key id (first 12 hex of its hash) of a valid key; None for a missing or bad one.

        The presented key's digest is compared with every stored digest in constant time, and
        the loop never stops early, so timing tells nothing about which key (if any) matched.
        """
        if not presented or len(presented) > MAX_KEY_LEN:
            return None
        digest = hashlib.sha256(presented.encode()).digest()
        matched = False
        for stored in self._digests:
            matched |= hmac.compare_digest(digest, stored)
        return digest.hex()[:KEY_ID_LEN] if matched else None


# --- rate limit ---------------------------------------------------------------------------

# GCRA (the token bucket expressed as a "theoretical arrival time", TAT). One key per API key
# holds the TAT in microseconds of Redis' own clock; it expires when the bucket would be full
# again, so idle keys vanish. Redis runs the script atomically; TIME inside a script is allowed
# since Redis 5 (effects replication, the only mode from Redis 7 on).
#   KEYS[1] the bucket; ARGV[1] emission interval (µs per request); ARGV[2] burst.
#   Returns {allowed (0/1), retry after (µs), remaining}.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if now < allow_at then
  return {0, math.ceil(allow_at - now), 0}
end
redis.call('SET', KEYS[1], string.format('%d', math.ceil(new_tat)),
           'PX', math.max(1, math.ceil((new_tat - now) / 1000)))
return {1, 0, math.floor((now - allow_at) / interval)}
"""
_GCRA_SHA = hashlib.sha1(_GCRA.encode()).hexdigest()


@dataclass(frozen=True)
class Decision:
    """What the rate limiter says about one request.

    Attributes:
        allowed: Serve the request.
        retry_after_s: When refused, seconds until one request would be allowed (else 0).
        remaining: Requests the key may still make at once (the burst when degraded: unknown).
        degraded: Redis did not answer; the request was let through unchecked (fail open).
    """

    allowed: bool
    retry_after_s: float
    remaining: int
    degraded: bool = False

    def headers(self) -> dict[str, str]:
        """Response headers: ``Retry-After`` (whole seconds) when refused, else the remaining."""
        if not self.allowed:
            return {"Retry-After": str(max(1, math.ceil(self.retry_after_s)))}
        return {} if self.degraded else {"X-RateLimit-Remaining": str(self.remaining)}


def redis_client(settings: Settings, breaker: Breaker | None = None) -> redis.Redis:
    """A client with explicit socket timeouts and no retries: a dead Redis costs one timeout;
    behind ``breaker``, a hung one costs one timeout per cool-down."""
    return cache.client(settings, timeout_s=settings.deadline_redis_ms / 1000, breaker=breaker)


class RateLimiter:
    """Per-key GCRA rate limit in Redis, shared by every replica on every node.

    Fails open: when Redis errs or times out, requests are allowed with ``degraded=True``. With
    a client behind a :class:`~core.breaker.Breaker` (what :meth:`from_settings` builds), this
    replica then skips Redis for the breaker's cool-down and sends one probe after it, so an
    outage costs at most one socket timeout per cool-down instead of one per request.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        rate_per_s: float,
        burst: int,
        prefix: str = "feedcast:ratelimit",
    ) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self.client = client
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.prefix = prefix
        self._interval_us = 1e6 / rate_per_s

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        breaker: Breaker | None = None,
        cooldown_s: float = 1.0,
        **kwargs: Any,
    ) -> RateLimiter:
        """The configured limit; buckets under ``feedcast:<feast project>:ratelimit:<key id>``
        (namespaced like ``core.cache``'s keys, so a test run never spends the demo's tokens).
        ``breaker``: the replica's Redis breaker (shared with its other Redis calls); a new one
        of ``cooldown_s`` by default.
        """
        kwargs.setdefault("prefix", f"feedcast:{settings.feast_project}:ratelimit")
        return cls(
            redis_client(settings, breaker or Breaker(cooldown_s)),
            rate_per_s=settings.rate_limit_per_s,
            burst=settings.rate_limit_burst,
            **kwargs,
        )

    def allow(self, key_id: str) -> Decision:
        """Take one request from ``key_id``'s bucket."""
        key = f"{self.prefix}:{key_id}"
        args = (f"{self._interval_us:.3f}", self.burst)
        try:
            try:
                reply = self.client.evalsha(_GCRA_SHA, 1, key, *args)
            except NoScriptError:  # first use on this server, or after SCRIPT FLUSH / restart
                reply = self.client.eval(_GCRA, 1, key, *args)
            # The sync client returns the reply itself; its stubs also allow an awaitable.
            allowed, retry_us, remaining = (int(x) for x in cast("list[int]", reply))
        except BreakerOpen:
            return self._open()
        except RedisError as exc:
            log.warning("rate limiter failing open: %r", exc)
            return self._open()
        return Decision(bool(allowed), retry_us / 1e6, remaining)

    def _open(self) -> Decision:
        return Decision(True, 0.0, self.burst, degraded=True)


# --- body size ----------------------------------------------------------------------------


class _TooLarge(Exception):
    pass


class BodyLimit:
    """Pure ASGI middleware: HTTP 413 for request bodies over ``max_bytes``.

    A declared ``Content-Length`` over the limit is refused before any of the body is read;
    a chunked (or understated) body is counted as it streams and refused once it passes the
    limit: the app's own answer (it sees an exception from ``receive``) is dropped and the 413
    sent instead, unless the app had already started its response, which is then cut short.

    ``app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)``
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = [v for k, v in scope["headers"] if k.lower() == b"content-length"]
        if declared:
            try:
                length = int(declared[0])
            except ValueError:
                await self._reply(send, 400, {"detail": "invalid Content-Length"})
                return
            if length > self.max_bytes:
                await self._too_large(send)
                return

        seen = 0
        exceeded = False
        started = False

        async def counting_receive() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    exceeded = True
                    raise _TooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:  # the app's answer to a body it never got in full (often a 500)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await self._too_large(send)

    async def _too_large(self, send: Send) -> None:
        detail = f"request body larger than {self.max_bytes} bytes"
        await self._reply(send, 413, {"detail": detail, "max_body_bytes": self.max_bytes})

    @staticmethod
    async def _reply(send: Send, status: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})
