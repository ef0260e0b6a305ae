"""A tiny world, its feature rows and both rankers, built with no service at all.

The world is generated to parquet only; the feature tables, Feast's file registry and the
point-in-time training set come from those files (Feast's offline store is parquet; nothing
here reads Redis, Cassandra or MLflow). Scores are computed as the service computes them, with
:mod:`serving.ranking` on feature rows in ``FEATURE_COLUMNS`` order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from core import constants as C
from core.settings import Settings
from features.store import FEATURE_COLUMNS
from pipelines.steps import features_apply, generate_world
from serving import ranking
from serving.model import Rankers
from simulator.config import WorldConfig
from training import heavy, light
from training.dataset import time_split, training_frame

# Fixed end and seed: the same world, the same models, on every run. Big enough that the heavy
# ranker learns the user's topic affinity (at 120 users and 4 epochs it did not); small enough
# for about a minute on two cores.
WORLD = WorldConfig(users=160, days=5, seed=7, end=datetime(2026, 1, 5, tzinfo=UTC))
LIGHT = light.LightParams(num_boost_round=60)
HEAVY = heavy.HeavyParams(epochs=10)
# Every column of the world's parquet files that holds an account id (authors are users).
ACCOUNT_COLUMNS = (C.USER_ID, C.AUTHOR_ID, "followee_id")


def offline_settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, home=data_dir / "home", feast_project="model_tier")


@dataclass(frozen=True)
class Tiny:
    settings: Settings
    frame: pd.DataFrame  # the point-in-time training set of the whole world
    holdout: pd.DataFrame  # its last day: rows the rankers never trained on
    rankers: Rankers


def build(data_dir: Path) -> Tiny:
    s = offline_settings(data_dir)
    generate_world(s, WORLD, to_cassandra=False)
    features_apply(s)
    frame = training_frame(s)
    split = time_split(frame, holdout_days=1.0)
    rankers = Rankers(
        light=light.train(split.train, LIGHT),
        light_version="tiny",
        heavy=heavy.train(split.train, HEAVY),
        heavy_version="tiny",
        light_name="light",
        heavy_name="heavy",
    )
    return Tiny(s, frame, split.holdout, rankers)


def batch(rows: pd.DataFrame) -> ranking.Batch:
    """One user's feature rows as the service's scoring batch."""
    users = rows[C.USER_ID].unique()
    assert len(users) == 1, "a batch is one user's candidates"
    return ranking.Batch(
        int(users[0]),
        rows[C.POST_ID].to_numpy(np.int64),
        rows[C.AUTHOR_ID].to_numpy(np.int64),
        rows[C.TOPIC].to_numpy(np.int64),
        rows[list(FEATURE_COLUMNS)].to_numpy(np.float64),
    )


def light_scores(rankers: Rankers, rows: pd.DataFrame) -> np.ndarray:
    """What the light ranker gives each row (the service's first stage)."""
    return ranking.light_scores(rankers, batch(rows))


def served_scores(rankers: Rankers, rows: pd.DataFrame, weights: dict[str, float]) -> np.ndarray:
    """The score the service ranks a page by: the heavy ranker's heads, blended."""
    return heavy.blend(ranking.heavy_heads(rankers, batch(rows)), weights)


def busiest(rows: pd.DataFrame, n: int) -> list[pd.DataFrame]:
    """The rows of the ``n`` users with the most rows, one frame per user."""
    users = rows[C.USER_ID].value_counts().index[:n]
    return [rows[rows[C.USER_ID] == u] for u in users]


def renamed_world(src: Settings, dst: Path, mapping: dict[int, int]) -> Settings:
    """A copy of ``src``'s world in which every account id in ``mapping`` is renamed, in every
    file and column that holds one; tables keep their id order (users by user_id)."""
    s = offline_settings(dst)
    s.world_dir.mkdir(parents=True)
    for path in src.world_dir.iterdir():
        if path.is_dir():  # derived (feature tables): built again from the renamed log
            continue
        if path.suffix != ".parquet":
            (s.world_dir / path.name).write_bytes(path.read_bytes())
            continue
        table = pd.read_parquet(path)
        for col in ACCOUNT_COLUMNS:
            if col in table:
                table[col] = table[col].map(lambda i: mapping.get(i, i)).astype(np.int64)
        if path.stem == "users":
            table = table.sort_values(C.USER_ID, kind="stable").reset_index(drop=True)
        table.to_parquet(s.world_dir / path.name, index=False)
    return s
