"""MLflow "model from code" for the heavy ranker: MLflow executes this file when loading.

Nothing is pickled: the weights are a state dict read with ``weights_only=True`` and the input
spec is JSON (see training.heavy). Only MLflow imports this module.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

from training.heavy import HeavyModel


class HeavyRanker(PythonModel):
    def load_context(self, context) -> None:
        self.model = HeavyModel.load(Path(context.artifacts["heavy"]))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return pd.DataFrame(self.model.predict(model_input, serving_like=True))


mlflow.models.set_model(HeavyRanker())
