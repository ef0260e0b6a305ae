"""MLflow: tracking setup, logging both rankers, registering them and moving aliases."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow import MlflowClient
from mlflow.models import infer_signature

from core.settings import Settings
from training.heavy import HeavyModel

# What loading needs; inferring it costs seconds and can pick up the whole environment.
LIGHT_REQUIREMENTS = [
    f"lightgbm=={lgb.__version__}",
    f"numpy=={np.__version__}",
    f"pandas=={pd.__version__}",
]
HEAVY_REQUIREMENTS = [
    f"torch=={torch.__version__.split('+')[0]}",
    f"numpy=={np.__version__}",
    f"pandas=={pd.__version__}",
]
HEAVY_CODE = Path(__file__).with_name("heavy_pyfunc.py")


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


def _registered(settings: Settings, name: str, info: Any, alias: str | None) -> Registered:
    """The registered version of a logged model, with ``alias`` moved onto it (atomic)."""
    if info.registered_model_version is None:  # logged in the run only, not registered
        return Registered(name, "")
    version = str(info.registered_model_version)
    if alias:
        MlflowClient(
            settings.mlflow_tracking_uri, settings.mlflow_tracking_uri
        ).set_registered_model_alias(name, alias, version)
    return Registered(name, version)


def log_light(
    booster: lgb.Booster,
    example: pd.DataFrame,
    settings: Settings,
    alias: str | None,
    register: bool = True,
) -> Registered:
    """The light ranker in LightGBM's own text format (no pickle), in the active run."""
    info = mlflow.lightgbm.log_model(
        booster,
        name="light_ranker",
        signature=infer_signature(example, booster.predict(example)),
        input_example=example.head(3),
        pip_requirements=LIGHT_REQUIREMENTS,
        registered_model_name=settings.model_name if register else None,
    )
    return _registered(settings, settings.model_name, info, alias)


def log_heavy(
    model: HeavyModel,
    example: pd.DataFrame,
    settings: Settings,
    alias: str | None,
    register: bool = True,
) -> Registered:
    """The heavy ranker as an MLflow model from code: a state dict and a JSON spec."""
    with tempfile.TemporaryDirectory() as tmp:
        model.save(Path(tmp) / "heavy")
        preds = pd.DataFrame(model.predict(example))
        info = mlflow.pyfunc.log_model(
            name="heavy_ranker",
            python_model=str(HEAVY_CODE),
            artifacts={"heavy": str(Path(tmp) / "heavy")},
            signature=infer_signature(example, preds),
            input_example=example.head(3),
            pip_requirements=HEAVY_REQUIREMENTS,
            registered_model_name=settings.heavy_model_name if register else None,
        )
    return _registered(settings, settings.heavy_model_name, info, alias)
