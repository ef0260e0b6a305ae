"""Run the service's two applications (the feed, and the upload tier under ``/v1/uploads``)
on a Ray cluster and wait until they answer."""

from __future__ import annotations

import os
import time

import httpx
import ray
from ray import serve

from core.settings import Settings
from serving import placement
from serving.app import build_app
from serving.http import UPLOADS_PREFIX, AppArgs
from serving.upload_app import build_upload_app
from stack import ingress, mlflow_server

APP_NAME = "feedcast"
UPLOAD_APP_NAME = "feedcast-uploads"  # its replicas: ray::ServeReplica:feedcast-uploads:...


class NotReadyError(RuntimeError):
    """What the feed needs before it can start is not there (no features applied, no model at
    the alias): the message says which, and the command that makes it."""


def preflight(settings: Settings) -> None:
    """Check, before Ray is touched, that the replicas will find what they load at start: the
    feature service in the Feast registry and both rankers at ``model_alias`` in MLflow.
    Without it a fresh checkout's ``feedcast serve start`` ended in Ray's traceback of a
    replica that failed to start (``FeatureServiceNotFoundException``) minutes later.

    Raises:
        NotReadyError: naming what is missing and what makes it.
    """
    from feast.errors import FeastObjectNotFoundException
    from mlflow.exceptions import MlflowException

    from features.definitions import FEATURE_SERVICE
    from features.store import open_store
    from serving.model import resolve

    try:
        open_store(settings).get_feature_service(FEATURE_SERVICE)
    except FeastObjectNotFoundException:
        raise NotReadyError(
            f"no feature service {FEATURE_SERVICE!r} of project {settings.feast_project!r} in "
            f"the Feast registry under {settings.feast_dir}: run `make demo` once (or "
            "`feedcast world generate`, "
            "`feedcast features apply` and `feedcast features materialize`)"
        ) from None
    if not mlflow_server.answers(settings):
        raise NotReadyError(
            f"MLflow at {settings.mlflow_tracking_uri} is not answering: start the stack with "
            "`feedcast stack up`"
        )
    try:
        resolve(settings, settings.model_alias)
    except MlflowException:
        raise NotReadyError(
            f"no model versions at @{settings.model_alias} of {settings.model_name} and "
            f"{settings.heavy_model_name} in MLflow: run `make demo` once (or `feedcast train`)"
        ) from None


def deploy(
    settings: Settings, *, address: str, timeout_s: float = 180, checked: bool = False
) -> str:
    """Deploy (or redeploy) both applications to the Ray cluster at ``address``; return the
    service's URL. :class:`NotReadyError` (see :func:`preflight`; skipped when ``checked``: the
    caller ran it) or :class:`~serving.placement.PlacementError` before anything is deployed."""
    if not checked:
        preflight(settings)
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
            # A local instance exports its metrics where the stack's Prometheus scrapes them.
            _metrics_export_port=settings.ray_metrics_port if address == "local" else None,
            # A local instance binds to loopback only (a cluster address brings its own).
            _node_ip_address="127.0.0.1" if address == "local" else None,
        )
    if settings.serve_placement_check:  # before anything is deployed: nothing left half-done
        placement.check(placement.demand(settings), ray.cluster_resources().get("CPU", 0.0))
    serve.start(
        http_options={
            "host": settings.serve_host,
            "port": settings.serve_port,
            "request_timeout_s": settings.serve_request_timeout_s,
        }
    )
    args = AppArgs(settings=settings.model_dump(mode="json"))
    serve.run(build_upload_app(args), name=UPLOAD_APP_NAME, route_prefix=UPLOADS_PREFIX)
    serve.run(build_app(args), name=APP_NAME, route_prefix="/")
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
