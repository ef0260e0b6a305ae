"""MLflow: tracking setup, logging the ranker, registering it and moving aliases."""

from __future__ import annotations

import os
from dataclasses import dataclass

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.models import infer_signature

from core.settings import Settings

# What serving needs to load the model; inferring it costs seconds and can pick up the world.
PIP_REQUIREMENTS = [
    f"lightgbm=={lgb.__version__}",
    f"numpy=={np.__version__}",
    f"pandas=={pd.__version__}",
]


def configure(settings: Settings) -> MlflowClient:
    """Point MLflow at the configured server with explicit HTTP timeouts and few retries."""
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(settings.mlflow_http_timeout_s)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    return MlflowClient(settings.mlflow_tracking_uri, settings.mlflow_tracking_uri)


@dataclass(frozen=True)
class Registered:
    name: str
    version: str
    run_id: str
    uri: str


def log_and_register(
    booster: lgb.Booster,
    example: pd.DataFrame,
    settings: Settings,
    *,
    alias: str | None,
) -> Registered:
    """Log ``booster`` (LightGBM text format, no pickle) in the active run and register it."""
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("log_and_register needs an active MLflow run")
    signature = infer_signature(example, booster.predict(example))
    info = mlflow.lightgbm.log_model(
        booster,
        name="model",
        signature=signature,
        input_example=example.head(3),
        pip_requirements=PIP_REQUIREMENTS,
        registered_model_name=settings.model_name,
    )
    version = str(info.registered_model_version)
    client = MlflowClient(settings.mlflow_tracking_uri, settings.mlflow_tracking_uri)
    if alias:
        client.set_registered_model_alias(settings.model_name, alias, version)
    return Registered(
        settings.model_name, version, run.info.run_id, f"models:/{settings.model_name}/{version}"
    )


def resolve_alias(client: MlflowClient, name: str, alias: str) -> str:
    """The version number an alias points at (raises if the alias does not exist)."""
    return str(client.get_model_version_by_alias(name, alias).version)
