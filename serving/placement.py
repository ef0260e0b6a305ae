"""Whether the service's deployments, each at its replica ceiling, fit the Ray cluster's CPUs.

Ray places a replica only where its logical CPUs (``ray_actor_options["num_cpus"]``) are free.
One that fits nowhere is not refused: it pends, and while any lease pends for resources the
raylet asks every worker of the cluster for a full ``gc.collect()``, once every ~10 s (its
"resource deadlock" handling: an actor handle caught in a reference cycle might hold the CPUs).
Each feed replica then stops for a full collection of its ~500k objects every ~10 s, 24-92 ms
here, for as long as the replica pends: the feed's p99 went 3-4x for the seven minutes an
upload burst's second worker pended (docs/RELIABILITY.md, 2026-12-07 evening). So a deployment
plan whose ceilings cannot all be placed is refused before it is deployed, naming what to
change.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.settings import Settings
from serving.app import FEED_CPUS, autoscaling_config
from serving.upload_app import UPLOAD_API_CPUS, UPLOAD_WORKER_CPUS


class PlacementError(ValueError):
    """The deployments at their ceilings need more logical CPUs than the cluster has."""


@dataclass(frozen=True)
class Demand:
    deployment: str
    replicas: int  # its ceiling
    cpus: float  # logical CPUs per replica
    setting: str  # what bounds ``replicas``

    @property
    def total(self) -> float:
        return self.replicas * self.cpus


def demand(s: Settings) -> list[Demand]:
    """Each deployment's ceiling and logical CPUs, as ``serving/deploy.py`` deploys them (the
    feed's ceiling from its capacity plan when it has one)."""
    feed_max = int(autoscaling_config(s)["max_replicas"])
    feed_bound = (
        "the capacity plan's max_replicas" if s.serve_capacity_plan else "serve_max_replicas"
    )
    return [
        Demand("FeedService", feed_max, FEED_CPUS, feed_bound),
        Demand("UploadService", 1, UPLOAD_API_CPUS, "one replica"),
        Demand("UploadWorker", s.upload_workers_max, UPLOAD_WORKER_CPUS, "upload_max_replicas"),
    ]


def check(rows: list[Demand], cluster_cpus: float) -> float:
    """The logical CPUs ``rows`` need at their ceilings; :class:`PlacementError` if more than
    ``cluster_cpus``."""
    need = round(sum(r.total for r in rows), 6)
    if need <= cluster_cpus + 1e-9:
        return need
    parts = ", ".join(f"{r.deployment} {r.replicas} x {r.cpus:g} ({r.setting})" for r in rows)
    raise PlacementError(
        f"the deployments need up to {need:g} logical CPUs at their replica ceilings ({parts}) "
        f"but the Ray cluster has {cluster_cpus:g}: a replica past that would never start, and "
        "while it waits Ray runs a full gc.collect() in every worker every ~10 s, which stalls "
        "the feed (docs/RELIABILITY.md). Lower serve_max_replicas or upload_max_replicas, add "
        "CPUs to the cluster, or, on a cluster whose autoscaler adds nodes, set "
        "FEEDCAST_SERVE_PLACEMENT_CHECK=false."
    )
