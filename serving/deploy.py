"""Run the feed application on a Ray cluster and wait until it answers."""

from __future__ import annotations

import os
import time

import httpx
import ray
from ray import serve

from core.settings import Settings
from serving.app import AppArgs, build_app
from stack import ingress

APP_NAME = "feedcast"


def deploy(settings: Settings, *, address: str, timeout_s: float = 180) -> str:
    """Deploy (or redeploy) the feed app to the Ray cluster at ``address``; return its URL."""
    if not ray.is_initialized():
        if address == "local":  # replicas at normal priority, not Ray's default nice 15
            os.environ.setdefault("RAY_worker_niceness", "0")
            ingress.export(settings)  # a local Ray starts with this process's environment
            ingress.stop_orphans(settings)  # a HAProxy left by a Ray killed without shutdown
        ray.init(
            address=address,
            namespace="feedcast",
            log_to_driver=False,
            include_dashboard=False if address == "local" else None,
            # A local instance binds to loopback only (a cluster address brings its own).
            _node_ip_address="127.0.0.1" if address == "local" else None,
        )
    serve.start(
        http_options={
            "host": settings.serve_host,
            "port": settings.serve_port,
            "request_timeout_s": settings.serve_request_timeout_s,
        }
    )
    serve.run(
        build_app(AppArgs(settings=settings.model_dump(mode="json"))),
        name=APP_NAME,
        route_prefix="/",
        blocking=False,
    )
    wait_healthy(settings.serve_url, timeout_s)
    return settings.serve_url


def wait_healthy(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{url}/healthz", timeout=2.0)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(0.5)
    raise RuntimeError(f"feed service at {url} not healthy after {timeout_s:.0f}s: {last}")
