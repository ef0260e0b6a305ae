"""The hidden true engagement model: what a user would really do with a post, at a time.

Models never see these parameters; evaluation compares them against this oracle. The truth is
saved beside the world (``truth.npz``) so that evaluation can score any (user, post, time).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from core import constants as C

Array = NDArray[np.float64]
HEADS = ("p_like", "p_comment", "p_save", "e_dwell")
SKIM_DWELL_S = 0.3  # an item scrolled past unexamined still sits on screen this long
UTILITY_WEIGHTS = {"p_like": 1.0, "p_comment": 2.0, "p_save": 3.0, "e_dwell": 0.05}


def sigmoid(x: Array) -> Array:
    return 1.0 / (1.0 + np.exp(-x))


def examination(position: NDArray, position_bias: float) -> Array:
    """Probability that the item at ``position`` (0-based) is looked at."""
    return 1.0 / (1.0 + np.asarray(position, dtype=np.float64)) ** position_bias


def utility(p: dict[str, Array], weights: dict[str, float] | None = None) -> Array:
    """Expected value of an impression: the blend every ranker is judged by."""
    w = weights or UTILITY_WEIGHTS
    return sum(w[h] * p[h] for h in HEADS)  # type: ignore[return-value]


@dataclass(frozen=True)
class Truth:
    """Hidden parameters of one world, indexed by dense user / author / post positions."""

    user_ids: NDArray[np.int64]
    taste: Array  # users × topics
    author_ids: NDArray[np.int64]
    post_ids: NDArray[np.int64]
    post_author: NDArray[np.int64]  # author index per post
    post_topic: NDArray[np.int64]
    post_quality: Array
    post_hour: Array  # creation, hours since world start
    post_video: NDArray[np.bool_]
    follow_user: NDArray[np.int64]  # user index per follow edge
    follow_author: NDArray[np.int64]  # author index per follow edge
    follow_affinity: Array
    params: Array  # base, taste_w, quality_w, affinity_w, in_network, recency, bias, dwell, start

    _KEYS = (
        "base",
        "taste_w",
        "quality_w",
        "affinity_w",
        "in_network",
        "recency",
        "position_bias",
        "base_dwell_s",
        "start_epoch_s",
    )

    def param(self, key: str) -> float:
        return float(self.params[self._KEYS.index(key)])

    def _affinity(self, u: NDArray[np.int64], a: NDArray[np.int64]) -> tuple[Array, Array]:
        """(affinity, followed) for user/author index pairs; 0 and False when not followed."""
        n_authors = len(self.author_ids)
        edge_key = self.follow_user * n_authors + self.follow_author
        order = np.argsort(edge_key)
        keys, aff = edge_key[order], self.follow_affinity[order]
        q = u * n_authors + a
        pos = np.clip(np.searchsorted(keys, q), 0, len(keys) - 1)
        hit = keys[pos] == q
        return np.where(hit, aff[pos], 0.0), hit

    def heads(self, u: NDArray[np.int64], p: NDArray[np.int64], hour: Array) -> dict[str, Array]:
        """True p_like, p_comment, p_save and E[dwell] if examined, for index arrays."""
        a = self.post_author[p]
        aff, followed = self._affinity(u, a)
        age_h = np.maximum(hour - self.post_hour[p], 0.0)
        logit = (
            self.param("base")
            + self.param("taste_w") * self.taste[u, self.post_topic[p]]
            + self.param("quality_w") * self.post_quality[p]
            + self.param("affinity_w") * aff
            + self.param("in_network") * followed
            - self.param("recency") * age_h
        )
        p_like = sigmoid(logit)
        dwell = (
            self.param("base_dwell_s")
            * (1.0 + 3.0 * p_like)
            * np.where(self.post_video[p], 2.5, 1.0)
        )
        return {
            "p_like": p_like,
            "p_comment": sigmoid(logit - 1.8),
            "p_save": sigmoid(logit - 2.2),
            "e_dwell": dwell,
        }

    def at_position(self, h: dict[str, Array], position: NDArray) -> dict[str, Array]:
        """What is observed at a slot: every head scaled by the examination probability."""
        e = examination(position, self.param("position_bias"))
        out = {k: e * h[k] for k in ("p_like", "p_comment", "p_save")}
        out["e_dwell"] = e * h["e_dwell"] + (1 - e) * SKIM_DWELL_S
        return out

    def score(self, frame: pd.DataFrame) -> dict[str, Array]:
        """True heads (examined) for rows with user_id, post_id and event_timestamp columns."""
        u = np.searchsorted(self.user_ids, frame[C.USER_ID].to_numpy())
        p = np.searchsorted(self.post_ids, frame[C.POST_ID].to_numpy())
        ts = pd.to_datetime(frame[C.EVENT_TS], utc=True).astype("int64").to_numpy() / 1e9
        return self.heads(u, p, (ts - self.param("start_epoch_s")) / 3600.0)

    def save(self, path: Path) -> None:
        np.savez_compressed(path, **{k: getattr(self, k) for k in self.__dataclass_fields__})

    @classmethod
    def load(cls, path: Path) -> Truth:
        with np.load(path) as data:
            return cls(**{k: data[k] for k in cls.__dataclass_fields__})
