"""Two-stage scoring as plain Python: callable from a test without Ray.

The light ranker (LightGBM) orders every candidate (:func:`light_order`); the heavy ranker (MMoE)
predicts its four heads for the best of them, blended into one score with configurable weights
(:func:`heavy_blend`). ``serving.feed`` keeps both in the user's session.
Everything runs on arrays: at 500 candidates a DataFrame per request costs more than the models.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from core import constants as C
from features.store import FEATURE_COLUMNS
from serving.model import Rankers
from training.heavy import blend, encode
from training.light import LIGHT_FEATURES

_COLUMN = {name: i for i, name in enumerate(FEATURE_COLUMNS)}
# The light ranker's columns in the feature matrix; position is scored as slot 0 (serving-like).
_LIGHT_FROM = [(j, _COLUMN[f]) for j, f in enumerate(LIGHT_FEATURES) if f != C.POSITION]
_LIGHT_DST = np.array([j for j, _ in _LIGHT_FROM], dtype=np.int64)
_LIGHT_SRC = np.array([i for _, i in _LIGHT_FROM], dtype=np.int64)
HEURISTIC_LABEL = "heuristic"


@dataclass(frozen=True)
class Batch:
    """One request's candidates as arrays; ``features`` is rows × FEATURE_COLUMNS."""

    user_id: int
    post_ids: np.ndarray
    author_ids: np.ndarray
    topics: np.ndarray
    features: np.ndarray

    def __len__(self) -> int:
        return len(self.post_ids)

    def column(self, name: str) -> np.ndarray:
        return self.features[:, _COLUMN[name]]


@functools.cache
def _dense_columns(names: tuple[str, ...]) -> np.ndarray:
    return np.array([_COLUMN[f] for f in names], dtype=np.int64)


def unknown_features(n: int) -> np.ndarray:
    """Every feature unknown (NaN): what the models see when the online store is down."""
    return np.full((n, len(FEATURE_COLUMNS)), np.nan)


def light_scores(rankers: Rankers, b: Batch) -> np.ndarray:
    x = np.zeros((len(b), len(LIGHT_FEATURES)))
    x[:, _LIGHT_DST] = b.features[:, _LIGHT_SRC]
    if rankers.light_compiled is not None:  # the same scores, a third of the CPU
        return rankers.light_compiled(x)
    return np.asarray(rankers.light.predict(x, num_threads=1), dtype=np.float64)


def heavy_heads(rankers: Rankers, b: Batch) -> dict[str, np.ndarray]:
    """The heavy ranker's heads (p_like, p_comment, p_save, e_dwell) for every row of ``b``."""
    spec = rankers.heavy.spec
    dense = b.features[:, _dense_columns(tuple(spec.dense))]
    inputs = encode(
        spec,
        dense,
        np.full(len(b), b.user_id, dtype=np.int64),
        b.author_ids,
        b.topics,
        b.column("hour_of_day"),
        rankers.heavy.arrays,
    )
    return rankers.heavy.predict_tensors(inputs)


def subset(b: Batch, idx: np.ndarray) -> Batch:
    return Batch(b.user_id, b.post_ids[idx], b.author_ids[idx], b.topics[idx], b.features[idx])


def light_order(rankers: Rankers, b: Batch) -> np.ndarray:
    """Rows of ``b`` by light score, best first (stable: ties keep the candidates' order)."""
    return np.argsort(-light_scores(rankers, b), kind="stable")


def heavy_blend(
    rankers: Rankers, b: Batch, weights: dict[str, float]
) -> tuple[np.ndarray, np.ndarray]:
    """The heavy ranker's blended score and E[dwell] for every row of ``b`` (batched, no grad)."""
    heads = heavy_heads(rankers, b)
    return np.asarray(blend(heads, weights), dtype=np.float64), np.asarray(heads["e_dwell"])


def heuristic_scores(b: Batch, followed: frozenset[int] | set[int]) -> np.ndarray:
    """No model at all: like rate (a prior where unknown) decayed by age, followed first."""
    rate = np.nan_to_num(b.column("post_like_rate"), nan=0.06)
    age = np.nan_to_num(b.column("post_age_h"), nan=24.0)
    in_net = np.fromiter((a in followed for a in b.author_ids.tolist()), bool, len(b))
    return np.asarray(rate * np.exp(-np.clip(age, 0, None) / 24.0) * np.where(in_net, 1.5, 1.0))
