"""What every HTTP route of the service shares, the feed's and the upload tier's: the Guard in
front of ``/v1`` (API key, rate limit, body size), the error answers, and the OpenAPI document.

Two Serve applications answer HTTP: the feed (``serving/app.py``, route prefix ``/``) and the
upload tier (``serving/upload_app.py``, ``/v1/uploads``), each with its own replicas, so that an
upload's body, decode and Cassandra writes never hold a feed replica's request slots. The feed's
``/openapi.json`` documents both (:func:`document`).
"""

# No `from __future__ import annotations`: FastAPI resolves the models' annotations at runtime.

import asyncio
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from core.breaker import Breaker
from core.settings import Settings
from serving.schemas import I64
from serving.security import ApiKeys, BodyLimit, RateLimiter

UPLOADS_PREFIX = "/v1/uploads"  # the upload tier's route prefix


class Guard:
    """ASGI middleware in front of every ``/v1`` route, before any body is read or validated:
    API key (401), per-key rate limit shared through Redis (429, with Retry-After), body size
    (413). ``/healthz`` and the OpenAPI document stay open.

    The frozen app Ray Serve ships to a replica carries this class by reference; the replica's
    constructor hands it the keys and limiter it built from its settings (:func:`arm`).
    """

    keys: ApiKeys | None = None
    limiter: RateLimiter | None = None
    metrics: Any = None
    rate_per_s: float = 0.0
    max_bytes: int = 64 * 1024

    upload_max_bytes: int = 20_000_000

    def __init__(self, app: Any, max_bytes: int = 64 * 1024) -> None:
        self.app = app
        self.limited = BodyLimit(app, max_bytes)
        self.upload_limited = BodyLimit(app, Guard.upload_max_bytes)  # its own, larger limit

    @classmethod
    def arm(cls, settings: Settings, metrics: Any, redis_breaker: Breaker | None = None) -> None:
        cls.keys, cls.limiter = (
            ApiKeys(settings.api_key_hashes),
            RateLimiter.from_settings(settings, breaker=redis_breaker),
        )
        cls.metrics, cls.rate_per_s = metrics, settings.rate_limit_per_s
        cls.max_bytes = settings.max_body_bytes
        cls.upload_max_bytes = settings.upload_max_bytes

    async def __call__(self, scope: Any, receive: Any, plain_send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, plain_send)
            return
        metrics = Guard.metrics

        async def send(message: Any) -> None:  # every /v1 answer is counted by its status
            if metrics is not None and message["type"] == "http.response.start":
                metrics.status(message["status"])
            await plain_send(message)

        keys, limiter = Guard.keys, Guard.limiter
        if keys is None or limiter is None:
            await _reply(scope, receive, send, 503, "starting up", {"Retry-After": "1"})
            return
        headers = dict(scope["headers"])
        key_id = keys.identify((headers.get(b"x-api-key") or b"").decode("latin-1") or None)
        if key_id is None:
            await _reply(
                scope,
                receive,
                send,
                401,
                "missing or invalid API key (X-API-Key header)",
                {"WWW-Authenticate": "ApiKey"},
            )
            return
        decision = await asyncio.to_thread(limiter.allow, key_id)  # Redis: off the event loop
        if decision.degraded:
            Guard.metrics.degraded("rate_limit")
        if not decision.allowed:
            Guard.metrics.rate_limited(key_id)
            detail = f"rate limit of {Guard.rate_per_s:g} requests/s exceeded"
            await _reply(scope, receive, send, 429, detail, decision.headers())
            return
        scope.setdefault("state", {})["key_id"] = key_id  # the upload quota is per key
        if scope["path"] == UPLOADS_PREFIX and scope.get("method") == "POST":
            self.upload_limited.max_bytes = Guard.upload_max_bytes
            await self.upload_limited(scope, receive, send)
            return
        self.limited.max_bytes = Guard.max_bytes
        await self.limited(scope, receive, send)


async def _reply(
    scope: Any, receive: Any, send: Any, status: int, detail: str, headers: dict[str, str]
) -> None:
    await JSONResponse({"detail": detail}, status_code=status, headers=headers)(
        scope, receive, send
    )


class Problem(BaseModel):
    """Every error but a validation error (422): what went wrong, in one sentence."""

    detail: str


_ERRORS = {
    400: "The body is not valid JSON, the cursor is not this user's valid cursor, or the "
    "uploaded photo's header does not decode.",
    401: "Missing or invalid API key (X-API-Key header).",
    403: "The post is another author's.",
    404: "The user (for an upload: the author; for a takedown: the post) does not exist.",
    409: "The id is already stored with different content.",
    413: "The request body is larger than the configured limit (an upload: its own limit, "
    "or more pixels than the limit).",
    415: "The upload is not a JPEG, PNG or WebP image (judged from its bytes).",
    429: "The API key is over its rate limit (or its hourly upload quota); Retry-After says "
    "when to come back.",
    503: "Overloaded or a store is unavailable; nothing was stored. Retry-After says when.",
}


def errors(*specific: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries of the errors a /v1 route can answer (``specific``: its own ones)."""
    codes = [401, 413, 429, 503, *specific]
    return {c: {"model": Problem, "description": _ERRORS[c]} for c in sorted(codes)}


def unavailable(detail: str, retry_after_s: int = 1) -> JSONResponse:
    """503 with Retry-After: a store is down and nothing was stored; the client retries."""
    return JSONResponse(
        {"detail": detail}, status_code=503, headers={"Retry-After": str(retry_after_s)}
    )


class AppArgs(BaseModel):
    """Arguments of the application builders (``serving/app.py``, ``serving/upload_app.py``):
    the settings the replicas run with."""

    settings: dict[str, Any] = Field(default_factory=dict)


def integer_bounds(node: Any) -> None:
    """FastAPI's document models hold bounds as floats: 2**63 - 1 comes out as 2.0**63, one
    past what a CQL bigint (and the validation) takes. Put integer bounds back as integers."""
    if isinstance(node, dict):
        if node.get("type") == "integer":
            for k in ("minimum", "maximum"):
                if isinstance(node.get(k), float):
                    node[k] = min(int(node[k]), I64) if k == "maximum" else int(node[k])
        for v in node.values():
            integer_bounds(v)
    elif isinstance(node, list):
        for v in node:
            integer_bounds(v)


def document(api: FastAPI, *others: FastAPI) -> dict[str, Any]:
    """One OpenAPI document for ``api`` and the apps served beside it (their routes carry whole
    paths), plus what the Guard enforces: the API key on every /v1 route."""
    routes = [r for app in (api, *others) for r in app.routes]
    doc = get_openapi(
        title=api.title, version=api.version, description=api.description, routes=routes
    )
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    doc["components"]["securitySchemes"] = {
        "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    }
    integer_bounds(doc)
    # FastAPI's validation error: a ``loc`` step is a field name or an index (>= 0).
    loc = schemas["ValidationError"]["properties"]["loc"]["items"]
    for alt in loc.get("anyOf", []):
        if alt.get("type") == "integer":
            alt.update(minimum=0, maximum=2**31 - 1)
    for path, ops in doc["paths"].items():
        if path.startswith("/v1/"):
            for op in ops.values():
                op["security"] = [{"ApiKey": []}]
    return doc
