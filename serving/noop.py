"""The benchmark's floor: Ray Serve's own cost of one HTTP request (proxy → replica → FastAPI, no
work), on the feed's deployment options.

``make bench`` deploys it beside the feed (``bench/serve.py``), at the same rates, so the feed's
cost is read against what Ray Serve costs on this machine. It lives in ``serving`` rather than
``bench`` because Ray's replicas import it by module path, and only the installed packages are
on their path.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve import Application

from core.settings import Settings

noop_api = FastAPI(title="feedcast-noop", description="Does nothing: Ray Serve's own floor.")


@serve.deployment(ray_actor_options={"num_cpus": 0.5})
@serve.ingress(noop_api)
class Noop:
    @noop_api.get("/")
    async def ok(self) -> dict[str, str]:
        return {"status": "ok"}


def build_noop_app(settings: Settings) -> Application:
    """The no-op application, with the feed's concurrency limits and one replica."""
    deployment: Any = Noop
    return deployment.options(
        num_replicas=1,
        max_ongoing_requests=settings.serve_max_ongoing_requests,
        max_queued_requests=settings.serve_max_queued_requests,
    ).bind()
