"""The per-key rate limit against the real Redis (only Redis: no need for the whole stack)."""

import socket
import time
import uuid
from typing import cast

import pytest
import redis

from core.settings import Settings
from serving import security
from serving.security import RateLimiter, redis_client

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def redis_settings(settings: Settings) -> Settings:
    """The suite's own Redis (started by the session's stack fixture)."""
    s = settings
    try:
        redis_client(s).ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis at {s.redis_url} does not answer (`feedcast stack up`?): {exc}")
    return s


@pytest.fixture
def prefix(redis_settings: Settings):
    """A key prefix of this test's own; whatever is left under it is deleted afterwards."""
    p = f"feedcast:test:ratelimit:{uuid.uuid4().hex[:10]}"
    yield p
    client = redis_client(redis_settings)
    for key in client.scan_iter(match=f"{p}:*"):
        client.delete(key)


def _limiter(s: Settings, prefix: str, rate: float, burst: int) -> RateLimiter:
    return RateLimiter(redis_client(s), rate_per_s=rate, burst=burst, prefix=prefix)


def test_the_burst_is_allowed_then_the_next_request_is_refused(redis_settings, prefix):
    limiter = _limiter(redis_settings, prefix, rate=1.0, burst=3)
    decisions = [limiter.allow("k") for _ in range(3)]
    assert all(d.allowed and not d.degraded for d in decisions)
    assert [d.remaining for d in decisions] == [2, 1, 0]
    refused = limiter.allow("k")
    assert not refused.allowed
    assert not refused.degraded
    assert 0 < refused.retry_after_s <= 1.0
    assert refused.headers()["Retry-After"] == "1"


def test_tokens_refill_at_the_rate(redis_settings, prefix):
    limiter = _limiter(redis_settings, prefix, rate=2.0, burst=2)
    assert limiter.allow("k").allowed
    assert limiter.allow("k").allowed
    refused = limiter.allow("k")
    assert not refused.allowed
    # Not a wait for a condition: the refill over this time is the behaviour under test.
    time.sleep(refused.retry_after_s + 0.05)
    assert limiter.allow("k").allowed  # one token came back ...
    assert not limiter.allow("k").allowed  # ... only one (the next is 0.5 s away)


def test_replicas_share_one_bucket_per_key_and_keys_do_not_share(redis_settings, prefix):
    replica_a = _limiter(redis_settings, prefix, rate=1.0, burst=2)
    replica_b = _limiter(redis_settings, prefix, rate=1.0, burst=2)  # its own connection pool
    assert replica_a.allow("k").allowed
    assert replica_b.allow("k").allowed
    assert not replica_a.allow("k").allowed
    assert not replica_b.allow("k").allowed
    assert replica_b.allow("other").allowed


def test_idle_buckets_expire(redis_settings, prefix):
    limiter = _limiter(redis_settings, prefix, rate=50.0, burst=1)
    assert limiter.allow("k").allowed
    ttl_ms = cast(int, limiter.client.pttl(f"{prefix}:k"))  # the sync client: an int
    # the bucket is full again one interval (20 ms) after the request, so the key expires by
    # then: it carries an expiry of at most that, or has already gone (-2); never none (-1)
    assert ttl_ms == -2 or 0 < ttl_ms <= 20
    time.sleep(0.1)  # on purpose: the key's own expiry, well past its 20 ms, is under test
    assert limiter.client.exists(f"{prefix}:k") == 0
    assert limiter.allow("k").allowed


def test_an_unknown_script_sha_falls_back_to_eval(redis_settings, prefix, monkeypatch):
    monkeypatch.setattr(security, "_GCRA_SHA", "0" * 40)  # as after SCRIPT FLUSH / a restart
    limiter = _limiter(redis_settings, prefix, rate=1.0, burst=1)
    first = limiter.allow("k")
    assert first.allowed and not first.degraded
    assert not limiter.allow("k").allowed


def test_from_settings_applies_the_configured_limit_in_the_projects_namespace(redis_settings):
    project = f"test_{uuid.uuid4().hex[:8]}"
    s = redis_settings.model_copy(
        update={"feast_project": project, "rate_limit_per_s": 1.0, "rate_limit_burst": 2}
    )
    limiter = RateLimiter.from_settings(s)
    key = f"feedcast:{project}:ratelimit:k"
    try:
        assert [limiter.allow("k").allowed for _ in range(3)] == [True, True, False]
        assert limiter.client.exists(key) == 1
    finally:
        limiter.client.delete(key)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_dead_redis_fails_open_and_says_so():
    s = Settings(env="test", redis_port=_free_port(), redis_timeout_s=0.2)
    d = RateLimiter.from_settings(s).allow("k")
    assert d.allowed and d.degraded
    assert d.headers() == {}


def _pending(listener: socket.socket) -> int:
    """Connections waiting in ``listener``'s backlog (accepted here, so counted once)."""
    listener.settimeout(0.2)
    n = 0
    while True:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            return n
        conn.close()
        n += 1


def test_a_silent_redis_is_not_tried_again_during_the_cooldown():
    with socket.socket() as silent:  # accepts connections (kernel backlog), never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        s = Settings(env="test", redis_port=silent.getsockname()[1], redis_timeout_s=0.2)
        limiter = RateLimiter.from_settings(s, cooldown_s=30)
        first = limiter.allow("k")  # returns: the socket timeout bounds the wait
        tried_first = _pending(silent)
        second = limiter.allow("k")
        tried_second = _pending(silent)
    assert first.allowed and first.degraded
    assert tried_first >= 1
    assert second.allowed and second.degraded
    assert tried_second == 0  # Redis not contacted again until the cooldown is over


def test_a_hung_redis_costs_one_timeout_per_cool_down_to_every_guarded_client():
    """The replica's Redis clients share one breaker: after one timeout, the limiter, the
    prefetcher and the page warmer all skip Redis at once instead of each waiting."""
    from core import cache
    from core.breaker import Breaker

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        s = Settings(env="test", redis_port=silent.getsockname()[1], deadline_redis_ms=200)
        breaker = Breaker(30)
        limiter = RateLimiter.from_settings(s, breaker=breaker)
        other = cache.client(s, timeout_s=0.2, breaker=breaker)
        first = limiter.allow("k")
        tried_first = _pending(silent)
        with pytest.raises(cache.BreakerOpen):
            other.get("x")
        pipe = other.pipeline(transaction=False)
        pipe.get("x")
        with pytest.raises(cache.BreakerOpen):
            pipe.execute()
        second = limiter.allow("k")
        tried_after = _pending(silent)
    assert first.degraded and second.degraded and second.allowed
    assert tried_first >= 1
    assert tried_after == 0
    assert breaker.skipped == 3
