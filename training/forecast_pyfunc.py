"""MLflow "model from code" for the traffic forecaster: MLflow executes this file when loading.

Nothing is pickled: one LightGBM text file per quantile and the params as JSON (see
training.forecast). Input: the hourly history (columns ``ds``, ``y``, at least two weeks);
output: the quantiles of the next ``horizon`` hours. Only MLflow imports this module.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

from training.forecast import Forecaster, to_frame


class TrafficForecaster(PythonModel):
    def load_context(self, context) -> None:
        self.model = Forecaster.load(Path(context.artifacts["forecaster"]))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return to_frame(self.model, model_input)


mlflow.models.set_model(TrafficForecaster())
