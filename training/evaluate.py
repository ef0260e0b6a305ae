"""Metrics, pure functions: NDCG@k, AUC, expected calibration error, SNIPS."""

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


def mean_ndcg(frame: pd.DataFrame, score_col: str, gain_col: str, k: int = 10) -> float:
    """Mean NDCG@k over requests with at least two items (vectorised :func:`ndcg_at_k`)."""
    codes = pd.factorize(frame[C.REQUEST_ID])[0]
    return grouped_ndcg(
        codes, frame[gain_col].to_numpy(np.float64), frame[score_col].to_numpy(np.float64), k
    )


def _within_group_rank(codes: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Rank (0-based) of each row of ``order`` inside its group, rows of a group contiguous."""
    g = codes[order]
    starts = np.r_[0, np.flatnonzero(np.diff(g)) + 1]
    first = np.repeat(starts, np.diff(np.r_[starts, len(g)]))
    return np.arange(len(g)) - first


def grouped_ndcg(codes: np.ndarray, gains: np.ndarray, scores: np.ndarray, k: int = 10) -> float:
    """Mean NDCG@k over groups (``codes``: 0..n-1 per row) with at least two rows. Ties keep
    row order, as the stable sort of :func:`ndcg_at_k` does."""
    if len(codes) == 0:
        return float("nan")
    n_groups = int(codes.max()) + 1
    rows = np.arange(len(codes))

    def dcg(order: np.ndarray) -> np.ndarray:
        rank = _within_group_rank(codes, order)
        top = rank < k
        return np.bincount(
            codes[order][top], gains[order][top] / np.log2(rank[top] + 2.0), minlength=n_groups
        )

    actual = dcg(np.lexsort((rows, -scores, codes)))
    ideal = dcg(np.lexsort((rows, -gains, codes)))
    size = np.bincount(codes, minlength=n_groups)
    keep = size > 1
    if not keep.any():
        return float("nan")
    ndcg = np.divide(actual, ideal, out=np.zeros(n_groups), where=ideal > 0)
    return float(ndcg[keep].mean())


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    labels = np.asarray(labels).astype(int)
    if labels.min() == labels.max():
        return float("nan")
    return float(roc_auc_score(labels, scores))


def ece(labels: np.ndarray, predicted: np.ndarray, bins: int = 20) -> float:
    """Expected calibration error over equal-mass bins: Σ_b (n_b / n) |mean(y_b) - mean(p_b)|.

    Equal-mass bins, because with rare positives equal-width bins put almost every row in the
    first bin and hide miscalibration.
    """
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    total = 0.0
    for chunk in np.array_split(order, bins):
        if len(chunk):
            total += len(chunk) * abs(y[chunk].mean() - p[chunk].mean())
    return total / len(y)


def relative_calibration_error(
    observed: np.ndarray, predicted: np.ndarray, bins: int = 20
) -> float:
    """ECE for a non-negative regression head, divided by the mean observation (unitless)."""
    return ece(observed, predicted, bins) / float(np.mean(observed))


def reliability(labels: np.ndarray, predicted: np.ndarray, bins: int = 20) -> pd.DataFrame:
    """Mean prediction vs mean outcome per equal-mass bin (for reliability diagrams)."""
    order = np.argsort(predicted, kind="stable")
    rows = [
        (float(np.mean(predicted[c])), float(np.mean(labels[c])), len(c))
        for c in np.array_split(order, bins)
        if len(c)
    ]
    return pd.DataFrame(rows, columns=["predicted", "observed", "n"])


def snips_by_slot(logged: pd.DataFrame, target_rank: pd.Series, reward: str) -> dict[int, float]:
    """Self-normalised IPS of a deterministic ranking policy, per slot (position-based model).

    ``logged`` has one row per logged impression (request_id, post_id, position, propensity and
    the observed ``reward``); ``target_rank`` maps (request_id, post_id) to the slot the target
    policy gives that post. A logged impression counts for slot k when the target policy also
    puts that post at k, weighted by 1 / propensity.
    """
    slot = target_rank.reindex(pd.MultiIndex.from_frame(logged[[C.REQUEST_ID, C.POST_ID]]))
    match = slot.to_numpy() == logged[C.POSITION].to_numpy()
    w = np.where(match, 1.0 / logged["propensity"].to_numpy(), 0.0)
    out = {}
    for k, g in pd.DataFrame(
        {"k": logged[C.POSITION].to_numpy(), "w": w, "r": logged[reward].to_numpy()}
    ).groupby("k"):
        if g["w"].sum() > 0:
            out[int(k)] = float((g["w"] * g["r"]).sum() / g["w"].sum())
    return out


def examination_curve(logged: pd.DataFrame, reward: str, explored: pd.Series) -> pd.Series:
    """Relative examination e_k / e_0 per slot, from the randomised pages only: there every
    item is equally likely at every slot, so the mean reward per slot is proportional to e_k."""
    by_slot = logged[explored.to_numpy()].groupby(C.POSITION)[reward].mean()
    return (by_slot / by_slot.iloc[0]).clip(lower=1e-3)


def snips_pbm(
    logged: pd.DataFrame,
    target_rank: pd.Series,
    reward: str,
    shown_propensity: str,
    examination: pd.Series,
) -> dict[int, float]:
    """Self-normalised IPS of a ranking policy under the position-based model, per target slot.

    A logged impression of a post the target policy puts at slot k counts wherever it was
    shown (slot j), reweighted by e_k / e_j and by 1 / P(post shown at all). Far more logged
    impressions match than with exact slot matching, so the variance is much lower; the price
    is the position-based-model assumption and an examination curve estimated from the logs.
    """
    slot = target_rank.reindex(pd.MultiIndex.from_frame(logged[[C.REQUEST_ID, C.POST_ID]]))
    keep = slot.notna().to_numpy()
    df = pd.DataFrame(
        {
            "k": slot.to_numpy()[keep].astype(int),
            "j": logged[C.POSITION].to_numpy()[keep],
            "w": 1.0 / logged[shown_propensity].to_numpy()[keep],
            "r": logged[reward].to_numpy()[keep],
        }
    )
    e = examination.reindex(range(max(df["j"].max(), df["k"].max()) + 1)).ffill().to_numpy()
    df["rr"] = df["r"] * e[df["k"]] / e[df["j"]]
    return {int(k): float((g["w"] * g["rr"]).sum() / g["w"].sum()) for k, g in df.groupby("k")}
