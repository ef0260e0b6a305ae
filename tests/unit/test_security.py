import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from pydantic import ValidationError

from core.settings import Settings
from serving.security import (
    DEV_API_KEY,
    DEV_API_KEY_HASH,
    ApiKeys,
    BodyLimit,
    Decision,
    hash_key,
    new_key,
)

# --- keys ---------------------------------------------------------------------------------


def test_hash_key_is_prefixed_sha256_hex_and_deterministic():
    h = hash_key("secret")
    assert h == "sha256:2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
    assert hash_key("secret") == h
    assert hash_key("Secret") != h


def test_the_dev_key_hash_is_the_hash_of_the_dev_key():
    assert hash_key(DEV_API_KEY) == DEV_API_KEY_HASH


def test_new_key_gives_a_random_key_and_its_hash():
    (k1, h1), (k2, h2) = new_key(), new_key()
    assert k1 != k2
    assert h1 == hash_key(k1)
    assert h2 == hash_key(k2)
    assert len(k1) >= 40


def test_api_keys_identify_a_valid_key_by_a_stable_id():
    key, h = new_key()
    keys = ApiKeys([DEV_API_KEY_HASH, h])
    assert keys.identify(key) == h.removeprefix("sha256:")[:12]
    assert ApiKeys([h]).identify(key) == keys.identify(key)
    assert keys.identify(DEV_API_KEY) == DEV_API_KEY_HASH[7:19]


@pytest.mark.parametrize("presented", [None, "", "feedcast-dev-ke", "x" * 10_000])
def test_api_keys_refuse_missing_wrong_and_oversized_keys(presented):
    assert ApiKeys([DEV_API_KEY_HASH]).identify(presented) is None


def test_api_keys_accept_bare_and_uppercase_hex_but_refuse_malformed_hashes():
    bare_upper = DEV_API_KEY_HASH.removeprefix("sha256:").upper()
    assert ApiKeys([bare_upper]).identify(DEV_API_KEY) is not None
    for bad in ("sha256:abc", "md5:" + "0" * 64, "z" * 64):
        with pytest.raises(ValueError, match="64 hex"):
            ApiKeys([bad])


def test_no_configured_key_accepts_nothing():
    keys = ApiKeys([])
    assert len(keys) == 0
    assert keys.identify(DEV_API_KEY) is None


# --- settings -----------------------------------------------------------------------------


def test_settings_default_to_the_dev_key_and_read_comma_separated_hashes(monkeypatch):
    assert Settings().api_key_hashes == [DEV_API_KEY_HASH]
    _, h = new_key()
    monkeypatch.setenv("FEEDCAST_API_KEY_HASHES", f" {h.removeprefix('sha256:').upper()} ,{h},")
    assert Settings().api_key_hashes == [h]


def test_settings_refuse_a_malformed_key_hash(monkeypatch):
    monkeypatch.setenv("FEEDCAST_API_KEY_HASHES", "not-a-hash")
    with pytest.raises(ValidationError, match="64 hex"):
        Settings()


def test_production_refuses_no_keys_and_the_dev_key():
    prod: dict[str, Any] = {
        "env": "production",
        "cassandra_replication_factor": 3,
        "cursor_keys": ["k1:a-production-cursor-secret"],
    }
    with pytest.raises(ValidationError, match="development API key"):
        Settings(**prod)
    with pytest.raises(ValidationError, match="FEEDCAST_API_KEY_HASHES"):
        Settings(**prod, api_key_hashes=[])
    with pytest.raises(ValidationError, match="development API key"):
        Settings(**prod, api_key_hashes=[new_key()[1], DEV_API_KEY_HASH.removeprefix("sha256:")])
    _, h = new_key()
    assert Settings(**prod, api_key_hashes=[h]).api_key_hashes == [h]


def test_decision_headers_say_when_to_retry_in_whole_seconds():
    assert Decision(False, 0.2, 0).headers() == {"Retry-After": "1"}
    assert Decision(False, 2.01, 0).headers() == {"Retry-After": "3"}
    assert Decision(True, 0.0, 7).headers() == {"X-RateLimit-Remaining": "7"}
    assert Decision(True, 0.0, 100, degraded=True).headers() == {}


# --- body size ----------------------------------------------------------------------------

LIMIT = 1024


def _app(calls: list[int], *, outside: bool = False) -> Any:
    """A tiny app with the limit added as FastAPI middleware, or wrapped around all of it
    (then FastAPI's own error middleware answers 500 first, which the limit must replace)."""
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        body = await request.body()
        calls.append(len(body))
        return {"received": len(body)}

    if outside:
        return BodyLimit(app, max_bytes=LIMIT)
    app.add_middleware(BodyLimit, max_bytes=LIMIT)
    return app


def _post(app: Any, content: bytes | AsyncIterator[bytes]) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.post("/echo", content=content)

    return asyncio.run(go())


def _chunks(total: int, size: int = 100) -> AsyncIterator[bytes]:
    async def gen() -> AsyncIterator[bytes]:
        for start in range(0, total, size):
            yield b"x" * min(size, total - start)

    return gen()


@pytest.mark.parametrize("n", [0, 10, LIMIT])
def test_bodies_up_to_the_limit_pass_through_whole(n):
    calls: list[int] = []
    r = _post(_app(calls), b"x" * n)
    assert r.status_code == 200
    assert r.json() == {"received": n}


def test_a_declared_length_over_the_limit_is_refused_with_413_naming_the_limit():
    calls: list[int] = []
    r = _post(_app(calls), b"x" * (LIMIT + 1))
    assert r.status_code == 413
    assert r.json()["max_body_bytes"] == LIMIT
    assert str(LIMIT) in r.json()["detail"]
    assert calls == []


def test_a_declared_length_over_the_limit_is_refused_before_reading_the_body():
    app_called = []
    sent: list[dict] = []

    async def app(scope, receive, send):  # pragma: no cover — must never run
        app_called.append(True)

    async def receive():  # pragma: no cover — must never run
        raise AssertionError("the body was read")

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "headers": [(b"content-length", b"9999999")],
    }
    asyncio.run(BodyLimit(app, max_bytes=LIMIT)(scope, receive, send))
    assert app_called == []
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["max_body_bytes"] == LIMIT


def test_a_chunked_body_within_the_limit_passes():
    calls: list[int] = []
    r = _post(_app(calls), _chunks(LIMIT))
    assert r.status_code == 200
    assert calls == [LIMIT]


@pytest.mark.parametrize("outside", [False, True])
def test_a_chunked_body_over_the_limit_is_refused_with_413_not_the_apps_500(outside):
    calls: list[int] = []
    r = _post(_app(calls, outside=outside), _chunks(LIMIT * 5))
    assert r.status_code == 413
    assert r.json()["max_body_bytes"] == LIMIT
    assert calls == []


def test_an_unparseable_content_length_is_a_400():
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    async def app(scope, receive, send):  # pragma: no cover — must never run
        raise AssertionError("the app ran")

    async def receive():  # pragma: no cover — must never run
        raise AssertionError("the body was read")

    scope = {"type": "http", "headers": [(b"content-length", b"ten")]}
    asyncio.run(BodyLimit(app, max_bytes=LIMIT)(scope, receive, send))
    assert sent[0]["status"] == 400


def test_non_http_scopes_pass_through_untouched():
    seen = []

    async def app(scope, receive, send):
        seen.append(scope["type"])

    async def receive():  # pragma: no cover — the app does not call it
        raise AssertionError

    async def send(message):  # pragma: no cover — the app does not call it
        raise AssertionError

    asyncio.run(BodyLimit(app, max_bytes=1)({"type": "lifespan"}, receive, send))
    assert seen == ["lifespan"]
