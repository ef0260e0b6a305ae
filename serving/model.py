"""Load the rankers an alias points at, from the configured MLflow registry only."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import mlflow

from core.settings import Settings
from training import registry
from training.heavy import HeavyModel


@dataclass(frozen=True)
class Rankers:
    light: lgb.Booster
    light_version: str
    heavy: HeavyModel
    heavy_version: str
    light_name: str
    heavy_name: str

    @property
    def label(self) -> str:
        """One label for the pair, e.g. ``feed_ranker/3+feed_ranker_heavy/3``."""
        return f"{self.light_name}/{self.light_version}+{self.heavy_name}/{self.heavy_version}"


def load_alias(settings: Settings, alias: str | None = None) -> Rankers:
    """Both rankers behind ``@alias``: LightGBM model text and a torch state dict (no pickle)."""
    client = registry.configure(settings)
    alias = alias or settings.model_alias
    lv = registry.resolve_alias(client, settings.model_name, alias)
    hv = registry.resolve_alias(client, settings.heavy_model_name, alias)
    booster = mlflow.lightgbm.load_model(f"models:/{settings.model_name}/{lv}")
    if not isinstance(booster, lgb.Booster):
        raise TypeError(f"{settings.model_name}/{lv} is not a LightGBM Booster model")
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{settings.heavy_model_name}/{hv}", dst_path=tmp
            )
        )
        found = [p.parent for p in local.rglob("spec.json")]
        if len(found) != 1:
            raise FileNotFoundError(f"{settings.heavy_model_name}/{hv}: no heavy ranker artifacts")
        heavy = HeavyModel.load(found[0])
    return Rankers(booster, lv, heavy, hv, settings.model_name, settings.heavy_model_name)
