"""Scoring and page assembly as plain Python: callable from a test without Ray."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.request import request_features
from serving.candidates import Candidate


@dataclass(frozen=True)
class RankedItem:
    post_id: int
    author_id: int
    score: float


def model_inputs(
    candidates: Sequence[Candidate],
    features: pd.DataFrame,
    feature_names: Sequence[str],
    now: datetime,
) -> pd.DataFrame:
    """The booster's input matrix, in its own feature order, for candidates in order."""
    req = request_features(
        pd.Timestamp(now), pd.Series([c.created_at for c in candidates]), np.zeros(len(candidates))
    )
    x = pd.concat([features.reset_index(drop=True), req], axis=1)
    missing = [f for f in feature_names if f not in x]
    for f in missing:  # a feature the store could not serve is unknown, not zero
        x[f] = np.nan
    return x[list(feature_names)].astype(np.float64)


def score(booster: lgb.Booster, x: pd.DataFrame) -> np.ndarray:
    return np.asarray(booster.predict(x), dtype=np.float64)


def assemble(
    candidates: Sequence[Candidate],
    scores: np.ndarray,
    limit: int,
    *,
    max_per_author: int = 2,
) -> list[RankedItem]:
    """Best-first page with at most ``max_per_author`` posts per author; backfilled if short."""
    order = np.argsort(-scores, kind="stable")
    page: list[RankedItem] = []
    held: list[RankedItem] = []
    per_author: dict[int, int] = {}
    for i in order:
        c = candidates[int(i)]
        item = RankedItem(c.post_id, c.author_id, float(scores[int(i)]))
        if per_author.get(c.author_id, 0) < max_per_author:
            per_author[c.author_id] = per_author.get(c.author_id, 0) + 1
            page.append(item)
        else:
            held.append(item)
        if len(page) == limit:
            return page
    return page + held[: limit - len(page)]
