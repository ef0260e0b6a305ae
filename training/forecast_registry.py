"""Log and register the traffic forecaster in MLflow like the rankers (no pickle, explicit pins)."""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.models import infer_signature

from core.settings import Settings
from training.forecast import Forecaster, to_frame
from training.registry import LIGHT_REQUIREMENTS, Registered, _registered

FORECAST_CODE = Path(__file__).with_name("forecast_pyfunc.py")
FORECAST_MODEL_NAME = "feedcast-traffic-forecaster"


def log_forecaster(
    model: Forecaster,
    history: pd.DataFrame,
    settings: Settings,
    alias: str | None,
    *,
    name: str = FORECAST_MODEL_NAME,
    register: bool = True,
) -> Registered:
    """The forecaster as an MLflow model from code, in the active run; ``history`` (``ds``,
    ``y``) gives the signature. Params and the calibration are logged too."""
    history = history.assign(ds=pd.to_datetime(history["ds"], utc=True).dt.tz_convert(None))
    mlflow.log_params({k: v for k, v in asdict(model.params).items() if k != "extra"})
    # What the held-back week taught the fit: the trees' share and the interval widening.
    mlflow.log_metrics({f"calibration_{k}": v for k, v in asdict(model.calibration).items()})
    with tempfile.TemporaryDirectory() as tmp:
        model.save(Path(tmp) / "forecaster")
        info = mlflow.pyfunc.log_model(
            name="traffic_forecaster",
            python_model=str(FORECAST_CODE),
            artifacts={"forecaster": str(Path(tmp) / "forecaster")},
            signature=infer_signature(history, to_frame(model, history)),
            pip_requirements=LIGHT_REQUIREMENTS,
            registered_model_name=name if register else None,
        )
    return _registered(settings, name, info, alias)
