"""Fit both rankers on a point-in-time training set: the light LightGBM, the heavy MMoE."""

from __future__ import annotations

from dataclasses import dataclass

import lightgbm as lgb
import pandas as pd

from core import constants as C
from core.settings import Settings
from training import heavy, light
from training.dataset import Split, time_split, training_frame


@dataclass(frozen=True)
class Fitted:
    split: Split
    light: lgb.Booster
    heavy: heavy.HeavyModel

    def heavy_example(self, n: int = 50) -> pd.DataFrame:
        cols = [*self.heavy.spec.dense, C.USER_ID, C.AUTHOR_ID, C.TOPIC, "hour_of_day"]
        return self.split.holdout[cols].head(n)

    def light_example(self, n: int = 50) -> pd.DataFrame:
        return light.features_matrix(self.split.holdout.head(n), serving_like=True)


def fit(
    settings: Settings,
    light_params: light.LightParams | None = None,
    heavy_params: heavy.HeavyParams | None = None,
    *,
    holdout_days: float = 1.0,
    progress: bool = False,
) -> Fitted:
    """Build the training set from the world under ``settings`` and fit both rankers."""
    split = time_split(training_frame(settings), holdout_days)
    if split.train.empty or split.holdout.empty:
        raise ValueError(
            f"not enough history: {len(split.train)} training and {len(split.holdout)} holdout "
            "rows; generate a world with more days"
        )
    booster = light.train(split.train, light_params or light.LightParams())
    model = heavy.train(split.train, heavy_params or heavy.HeavyParams(), progress=progress)
    return Fitted(split, booster, model)
