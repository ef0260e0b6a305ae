"""Train the ranker end to end: point-in-time set → LightGBM → holdout metrics → registry."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import mlflow
import numpy as np

from core.settings import Settings
from training import evaluate, ranker, registry
from training.dataset import time_split, training_frame


@dataclass(frozen=True)
class TrainResult:
    metrics: dict[str, float]
    model_name: str
    version: str
    run_id: str


def train_and_register(
    settings: Settings,
    params: ranker.RankerParams | None = None,
    *,
    holdout_days: float = 1.0,
    alias: str | None = "champion",
) -> TrainResult:
    params = params or ranker.RankerParams()
    registry.configure(settings)
    frame = training_frame(settings)
    split = time_split(frame, holdout_days)
    if split.train.empty or split.holdout.empty:
        raise ValueError(
            f"not enough history: {len(split.train)} training and {len(split.holdout)} holdout "
            "rows; generate a world with more days"
        )
    mlflow.set_experiment(settings.experiment)
    with mlflow.start_run(run_name="ranker-lightgbm") as run:
        mlflow.log_params({k: v for k, v in asdict(params).items() if k != "extra"})
        mlflow.log_params(
            {
                "train_rows": len(split.train),
                "holdout_rows": len(split.holdout),
                "holdout_cutoff": split.cutoff.isoformat(),
                "feature_service": "feed_ranker_v1",
            }
        )
        booster = ranker.train(split.train, params)
        scores = np.asarray(
            booster.predict(ranker.features_matrix(split.holdout, serving_like=True))
        )
        metrics = evaluate.evaluate(split.holdout, scores)
        mlflow.log_metrics(metrics)
        example = ranker.features_matrix(split.holdout.head(50), serving_like=True)
        reg = registry.log_and_register(booster, example, settings, alias=alias)
    return TrainResult(metrics, reg.name, reg.version, run.info.run_id)
