"""Two-stage scoring as plain Python: callable from a test without Ray.

The light ranker (LightGBM) scores every candidate and keeps the best ``keep``; the heavy ranker
(MMoE) predicts its four heads for those, blended into one score with configurable weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from core import constants as C
from serving.candidates import Candidate
from serving.model import Rankers
from serving.rules import Scored
from training import light
from training.dataset import MODEL_FEATURES
from training.heavy import blend


def model_inputs(
    candidates: Sequence[Candidate], features: pd.DataFrame, user_id: int
) -> pd.DataFrame:
    """One row per candidate: ids, topic, and every model feature (unknown → NaN)."""
    x = pd.DataFrame(
        {
            C.USER_ID: np.full(len(candidates), user_id, dtype=np.int64),
            C.POST_ID: np.array([c.post_id for c in candidates], dtype=np.int64),
            C.AUTHOR_ID: np.array([c.author_id for c in candidates], dtype=np.int64),
            C.TOPIC: np.array([c.topic for c in candidates], dtype=np.int64),
        }
    )
    feats = features.reset_index(drop=True)
    for f in MODEL_FEATURES:  # a feature the store could not serve is unknown, not zero
        x[f] = feats[f].to_numpy(np.float64) if f in feats else np.nan
    return x


def score(
    rankers: Rankers,
    x: pd.DataFrame,
    followed: set[int],
    *,
    keep: int,
    weights: dict[str, float],
) -> list[Scored]:
    """Light ranker prunes to ``keep``, heavy ranker scores the rest (batched, no grad)."""
    if x.empty:
        return []
    light_scores = np.asarray(rankers.light.predict(light.features_matrix(x, serving_like=True)))
    top = np.argsort(-light_scores, kind="stable")[:keep]
    kept = x.iloc[top].reset_index(drop=True)
    scores = blend(rankers.heavy.predict(kept, serving_like=True), weights)
    return [
        Scored(
            int(kept[C.POST_ID].iat[i]),
            int(kept[C.AUTHOR_ID].iat[i]),
            float(scores[i]),
            int(kept[C.AUTHOR_ID].iat[i]) in followed,
        )
        for i in range(len(kept))
    ]
