"""Realism statistics of a world's follow graph and request trace."""

from __future__ import annotations

import numpy as np
import pandas as pd

from core import constants as C


def power_law_exponent(values: np.ndarray) -> tuple[float, float]:
    """(alpha, x_min) of a discrete power-law tail, maximum likelihood with x_min chosen by
    the smallest Kolmogorov-Smirnov distance (Clauset, Shalizi & Newman 2009)."""
    x = np.sort(np.asarray(values, dtype=np.float64)[np.asarray(values) > 0])
    best = (np.inf, 2.0, 1.0)
    for x_min in np.unique(np.quantile(x, np.linspace(0.05, 0.9, 30)).round()):
        tail = x[x >= x_min]
        if len(tail) < 50 or x_min < 1:
            continue
        alpha = 1.0 + len(tail) / np.sum(np.log(tail / (x_min - 0.5)))
        emp = np.arange(1, len(tail) + 1) / len(tail)
        model = 1.0 - (tail / x_min) ** (1.0 - alpha)
        ks = float(np.max(np.abs(emp - model)))
        if ks < best[0]:
            best = (ks, float(alpha), float(x_min))
    return best[1], best[2]


def zipf_exponent(counts: np.ndarray, top_share: float = 0.5) -> float:
    """Slope s of log(frequency) = -s · log(rank) + c over the most requested objects."""
    f = np.sort(np.asarray(counts, dtype=np.float64))[::-1]
    f = f[f > 0]
    n = max(10, int(len(f) * top_share))
    ranks = np.arange(1, min(n, len(f)) + 1)
    slope, _ = np.polyfit(np.log(ranks), np.log(f[: len(ranks)]), 1)
    return float(-slope)


def hourly_top_churn(requests: pd.DataFrame, share: float = 0.1) -> float:
    """Mean share of an hour's top ``share`` objects that were not in the previous hour's."""
    hour = requests[C.EVENT_TS].dt.floor("h")
    counts = requests.groupby([hour, C.POST_ID]).size()
    prev: set[int] | None = None
    churn = []
    for _, c in counts.groupby(level=0):
        c = c.droplevel(0).sort_values(ascending=False)
        top = set(c.index[: max(1, int(len(c) * share))].tolist())
        if prev:
            churn.append(len(top - prev) / len(top))
        prev = top
    return float(np.mean(churn)) if churn else float("nan")


def world_stats(users: pd.DataFrame, impressions: pd.DataFrame) -> dict[str, float]:
    """What a reader needs to judge realism; each media request is an impression."""
    alpha, x_min = power_law_exponent(users["follower_count"].to_numpy())
    per_post = impressions.groupby(C.POST_ID).size().to_numpy()
    return {
        "follower_exponent": alpha,
        "follower_x_min": x_min,
        "max_followers": float(users["follower_count"].max()),
        "median_followers_of_authors": float(
            users.loc[users.follower_count > 0, "follower_count"].median()
        ),
        "request_zipf_exponent": zipf_exponent(per_post),
        "one_hit_share": float(np.mean(per_post == 1)),
        "hourly_top10_churn": hourly_top_churn(impressions),
        "requests": float(len(impressions)),
        "objects": float(len(per_post)),
    }
