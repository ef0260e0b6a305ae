"""Ranking metrics on a holdout: NDCG@k against the simulator's true utility, and AUC."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from core import constants as C


def ndcg_at_k(gains: np.ndarray, scores: np.ndarray, k: int = 10) -> float:
    """NDCG@k of one list: ``gains`` ordered by ``scores`` (desc) against the ideal order."""
    order = np.argsort(-scores, kind="stable")[:k]
    discounts = 1.0 / np.log2(np.arange(2, len(order) + 2))
    dcg = float(np.sum(gains[order] * discounts))
    ideal = float(np.sum(np.sort(gains)[::-1][:k] * discounts[: min(k, len(gains))]))
    return dcg / ideal if ideal > 0 else 0.0


def mean_ndcg(
    frame: pd.DataFrame, score_col: str, gain_col: str = "oracle_utility", k: int = 10
) -> float:
    """Mean NDCG@k over requests (each logged page re-ranked by ``score_col``)."""
    values = [
        ndcg_at_k(g[gain_col].to_numpy(np.float64), g[score_col].to_numpy(np.float64), k)
        for _, g in frame.groupby(C.REQUEST_ID, sort=False)
        if len(g) > 1
    ]
    return float(np.mean(values)) if values else float("nan")


def evaluate(holdout: pd.DataFrame, scores: np.ndarray) -> dict[str, float]:
    """The ranker next to reverse-chronological order and the oracle, on the same pages."""
    df = holdout.assign(
        score_model=scores,
        score_chrono=-holdout["post_age_h"].to_numpy(),
        score_oracle=holdout["oracle_utility"].to_numpy(),
    )
    liked = df[C.LIKE].astype(int).to_numpy()
    return {
        "ndcg10_model": mean_ndcg(df, "score_model"),
        "ndcg10_chrono": mean_ndcg(df, "score_chrono"),
        "ndcg10_oracle": mean_ndcg(df, "score_oracle"),
        "ndcg10_labels_model": mean_ndcg(df, "score_model", gain_col=C.LABEL),
        "ndcg10_labels_chrono": mean_ndcg(df, "score_chrono", gain_col=C.LABEL),
        "auc_like": float(roc_auc_score(liked, scores))
        if 0 < liked.sum() < len(liked)
        else float("nan"),
        "auc_like_oracle": float(roc_auc_score(liked, df["oracle_p_like"]))
        if 0 < liked.sum() < len(liked)
        else float("nan"),
        "holdout_rows": float(len(df)),
        "holdout_requests": float(df[C.REQUEST_ID].nunique()),
    }
