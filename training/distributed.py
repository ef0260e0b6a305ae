"""Both rankers fitted through Ray Train: on the local Ray, or on a cluster (``--ray-address``).

The API is Ray Train v2 (the default in Ray 2.60): a ``train_loop_per_worker`` per trainer,
the result reported once by rank 0 as a checkpoint folder — LightGBM's model text, or
``HeavyModel.save``'s weights and spec (no pickles) — and read back on the driver.

Every worker reads the training parquet from ``train_path`` and keeps its share of the
requests; Ray Data is not used. Its block-wise split would cut LambdaRank groups (a request
must stay on one worker), and the heavy ranker's spec (vocabularies, scales) needs every row
on every worker anyway. On a cluster, ``train_path`` and ``storage`` must therefore be on
storage every node sees under the same path (NFS, say), and ``feedcast`` must be installed on
the nodes.

Ray is imported inside the functions: Ray reads its token settings when first imported, and
the CLI exports them (``stack.ray_head.auth_env``) only once its commands run.
"""

from __future__ import annotations

import math
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightgbm as lgb
import pandas as pd
import torch

from core import constants as C
from core.settings import Settings
from stack.ray_head import auth_env
from training import heavy, light

if TYPE_CHECKING:
    from ray.train import Checkpoint, ScalingConfig

MODEL_TEXT = "model.txt"  # Ray's RayTrainReportCallback.CHECKPOINT_NAME: its get_model reads it
# A reservation, not a limit: two workers fit on a 2-core node beside the feed replicas
# (0.5 CPU each), so a retrain does not wait for serving to scale down.
CPUS_PER_WORKER = 0.5
# A run whose workers cannot be placed fails after 1 + this many 60 s waits for resources
# (Ray Train's default, -1, waits for ever: a scheduled retrain would hang).
START_RETRIES = 2


class DistributedTrainingError(RuntimeError):
    """A Ray Train run failed; the message names the trainer, the run and the cause."""


def shard(frame: pd.DataFrame, rank: int, world: int) -> pd.DataFrame:
    """Worker ``rank``'s share: whole requests, dealt round-robin in order of appearance.

    A LambdaRank group never straddles two workers, shares differ by at most one request, and
    each keeps the rows' order (time, request, position), which the groups rely on.
    """
    if world == 1:
        return frame
    request = pd.factorize(frame[C.REQUEST_ID])[0]
    return frame[request % world == rank]


@contextmanager
def connected(address: str | None, settings: Settings | None = None) -> Iterator[None]:
    """Ray for the length of a fit: the one this process already uses (an in-process Serve
    app's), else the cluster at ``address``, else a new local one; shut down only if started
    here. ``settings`` (default: from the environment) locates the stack's Ray token."""
    import ray  # lazy: ~0.1 s, and ray reads its token env at import (see the docstring)
    from ray._private.authentication.authentication_token_setup import (  # lazy: as ray
        AuthenticationTokenLoader,
        Config,
    )

    if ray.is_initialized():
        yield
        return
    auth_env(settings or Settings())
    # If Ray was imported before that export, refresh its cached auth settings, as Ray itself
    # does when it turns token auth on (ray/_private/authentication/authentication_token_setup).
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()
    local = address is None
    ray.init(
        address=address or "local",
        namespace="feedcast",
        include_dashboard=False if local else None,
        # As serving.deploy: loopback asked for (Ray 2.60 resolves it to the node's address).
        _node_ip_address="127.0.0.1" if local else None,
    )
    try:
        yield
    finally:
        ray.shutdown()


def _rank_world() -> tuple[int, int]:
    import ray.train  # lazy: ray.train ~0.3 s at import (see the docstring)

    ctx = ray.train.get_context()
    return ctx.get_world_rank(), ctx.get_world_size()


def _report(rank: int, save: Callable[[Path], object], metrics: dict[str, float]) -> None:
    """Rank 0 reports the checkpoint; every rank calls ``report`` (a barrier)."""
    import ray.train  # lazy: ray.train ~0.3 s at import (see the docstring)

    with tempfile.TemporaryDirectory() as tmp:
        if rank == 0:
            save(Path(tmp))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics, checkpoint=None)


def _light_worker(config: dict[str, Any]) -> None:
    from ray.train.lightgbm import get_network_params  # lazy: ~0.4 s; Ray's workers only

    rank, world = _rank_world()
    params: light.LightParams = config["params"]
    columns = [*light.LIGHT_FEATURES, C.LABEL, C.REQUEST_ID]
    own = shard(pd.read_parquet(config["path"], columns=columns), rank, world)
    lgb_params = params.lgb_params()
    if world > 1:  # each worker holds its own requests: data-parallel over pre-split rows
        lgb_params |= {"tree_learner": "data_parallel", "pre_partition": True}
        # Threads as reserved: oversubscribed workers wait on each other at every histogram
        # exchange (2 workers × 2 threads on 2 cores took twice as long as 2 × 1).
        lgb_params |= {"num_threads": config["threads"], **get_network_params()}
    booster = lgb.train(lgb_params, light.dataset(own), num_boost_round=params.num_boost_round)
    _report(
        rank,
        lambda folder: booster.save_model(str(folder / MODEL_TEXT)),
        {"rows": float(len(own))},
    )


def _largest(value: float) -> float:
    """The largest ``value`` over the workers: every worker gets the same number back."""
    if not torch.distributed.is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.float64)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return float(t.item())


def _heavy_worker(config: dict[str, Any]) -> None:
    from ray.train.torch import prepare_model  # lazy: ~0.3 s; Ray's workers only

    rank, world = _rank_world()
    replica = heavy.Replica(
        rank=rank,
        world=world,
        rows=lambda frame: shard(frame, rank, world),
        wrap=prepare_model,  # DistributedDataParallel when world > 1, the net itself at 1
        agree=_largest,
    )
    frame = pd.read_parquet(config["path"])
    model = heavy.train(frame, config["params"], config["progress"], replica=replica)
    _report(rank, model.save, {"rows": float(len(frame))})


def _fit(trainer_cls: type, name: str, storage: Path, **kwargs: Any) -> Checkpoint:
    """Run the trainer; its one checkpoint, or an error naming the trainer, run and cause."""
    import ray.train  # lazy: ray.train ~0.3 s at import (see the docstring)

    trainer = trainer_cls(
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=str(storage),
            # mypy reads Ray Train v1's FailureConfig; Ray 2.60 runs v2's, which has the limit.
            failure_config=ray.train.FailureConfig(  # type: ignore[call-arg]
                max_failures=0, controller_failure_limit=START_RETRIES
            ),
        ),
        **kwargs,
    )
    what = f"Ray Train {trainer_cls.__name__} run {name!r}"
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as exc:
        failures = getattr(exc, "worker_failures", None) or {}
        cause = "; ".join(
            f"worker {rank}: {type(e).__name__}: {e}" for rank, e in sorted(failures.items())
        )
        raise DistributedTrainingError(f"{what} failed: {cause or exc}") from exc
    if result.checkpoint is None:
        raise DistributedTrainingError(f"{what} reported no checkpoint")
    return result.checkpoint


def _scaling(workers: int, cpus_per_worker: float) -> ScalingConfig:
    import ray.train  # lazy: ray.train ~0.3 s at import (see the docstring)

    return ray.train.ScalingConfig(
        num_workers=workers, use_gpu=False, resources_per_worker={"CPU": cpus_per_worker}
    )


def _name(model: str) -> str:
    return f"feedcast-{model}-{uuid.uuid4().hex[:8]}"


def train_light_ray(
    train_path: Path,
    params: light.LightParams,
    *,
    address: str | None,
    workers: int,
    storage: Path,
    cpus_per_worker: float = CPUS_PER_WORKER,
    settings: Settings | None = None,
) -> lgb.Booster:
    """The light ranker (``light.train``) through ``LightGBMTrainer`` on ``workers`` workers.

    One worker fits exactly what ``light.train`` fits; more run LightGBM's data-parallel
    learner, each worker on whole requests with as many threads as CPUs it reserves. The
    run's files go to ``storage``/feedcast-light-<id>.
    """
    from ray.train.lightgbm import LightGBMTrainer  # lazy: ray.train.lightgbm ~0.4 s

    with connected(address, settings):
        checkpoint = _fit(
            LightGBMTrainer,
            _name("light"),
            storage,
            train_loop_per_worker=_light_worker,
            train_loop_config={
                "path": str(train_path),
                "params": params,
                "threads": max(1, math.ceil(cpus_per_worker)),
            },
            scaling_config=_scaling(workers, cpus_per_worker),
        )
        with checkpoint.as_directory() as folder:
            return lgb.Booster(model_str=(Path(folder) / MODEL_TEXT).read_text())


def train_heavy_ray(
    train_path: Path,
    params: heavy.HeavyParams,
    *,
    address: str | None,
    workers: int,
    storage: Path,
    progress: bool = False,
    cpus_per_worker: float = CPUS_PER_WORKER,
    settings: Settings | None = None,
) -> heavy.HeavyModel:
    """The heavy ranker (``heavy.train``) through ``TorchTrainer`` on ``workers`` workers.

    One worker runs ``heavy.train`` itself; more each train on their requests under DDP
    (gloo), with the spec and calibration fitted on all rows as ``heavy.train`` does. The
    run's files go to ``storage``/feedcast-heavy-<id>.
    """
    from ray.train.torch import TorchConfig, TorchTrainer  # lazy: ray.train.torch ~0.3 s

    with connected(address, settings):
        checkpoint = _fit(
            TorchTrainer,
            _name("heavy"),
            storage,
            train_loop_per_worker=_heavy_worker,
            train_loop_config={"path": str(train_path), "params": params, "progress": progress},
            torch_config=TorchConfig(backend="gloo"),
            scaling_config=_scaling(workers, cpus_per_worker),
        )
        with checkpoint.as_directory() as folder:
            return heavy.HeavyModel.load(Path(folder))
