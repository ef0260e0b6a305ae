"""Load the ranker an alias points at, from the configured MLflow registry only."""

from __future__ import annotations

from dataclasses import dataclass

import lightgbm as lgb
import mlflow

from core.settings import Settings
from training import registry


@dataclass(frozen=True)
class LoadedModel:
    booster: lgb.Booster
    name: str
    version: str

    @property
    def feature_names(self) -> list[str]:
        return list(self.booster.feature_name())

    @property
    def label(self) -> str:
        return f"{self.name}/{self.version}"


def load_alias(settings: Settings, alias: str | None = None) -> LoadedModel:
    """The version behind ``@alias`` as a LightGBM booster (model text format: no pickle)."""
    client = registry.configure(settings)
    version = registry.resolve_alias(client, settings.model_name, alias or settings.model_alias)
    booster = mlflow.lightgbm.load_model(f"models:/{settings.model_name}/{version}")
    if not isinstance(booster, lgb.Booster):
        raise TypeError(f"{settings.model_name}/{version} is not a LightGBM Booster model")
    return LoadedModel(booster, settings.model_name, version)
