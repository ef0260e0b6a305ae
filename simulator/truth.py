"""The hidden true engagement model: what a user would really do with a post.

Models never see these parameters; evaluation compares them against this oracle.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]

RECENCY_PER_H = 0.03  # logit lost per hour of post age
POSITION_BIAS = 0.5  # examination probability ∝ 1 / (1 + position) ** POSITION_BIAS


def sigmoid(x: Array) -> Array:
    return 1.0 / (1.0 + np.exp(-x))


def like_logit(base: float, taste: Array, quality: Array, affinity: Array, age_h: Array) -> Array:
    """Logit of p_like for arrays of (user taste for the post's topic, author quality, ...)."""
    return base + 3.0 * taste + 0.7 * quality + 0.8 * affinity - RECENCY_PER_H * age_h


def probabilities(logit: Array) -> dict[str, Array]:
    """True p_like, p_comment, p_save from the like logit."""
    return {
        "p_like": sigmoid(logit),
        "p_comment": sigmoid(logit - 1.8),
        "p_save": sigmoid(logit - 2.2),
    }


def utility(p: dict[str, Array]) -> Array:
    """Expected graded relevance (like 1, comment 2, save 3): what the oracle ranks by."""
    return p["p_like"] + 2.0 * p["p_comment"] + 3.0 * p["p_save"]


def examination(position: Array) -> Array:
    return 1.0 / (1.0 + position) ** POSITION_BIAS
