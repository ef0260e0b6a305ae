"""Judge the rankers against the simulator's truth on held-out days.

``evaluation`` is the one package that may read the hidden truth (``simulator.truth``), an
import-linter contract in ``make lint`` keeps it so; features, models and serving never do.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

from core import constants as C
from core.settings import Settings
from simulator.config import WorldConfig
from simulator.truth import HEADS, Truth, utility
from simulator.writer import TRUTH_FILE
from training import evaluate as M
from training import light
from training.dataset import point_in_time
from training.heavy import TARGETS, HeavyModel, blend

K = 10


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, float]
    ranked: pd.DataFrame  # held-out candidates with every policy's score and the true utility
    logged: pd.DataFrame  # held-out logged impressions with predictions and the truth
    reliability: dict[str, pd.DataFrame]


def holdout_candidates(settings: Settings, req: pd.DataFrame) -> pd.DataFrame:
    """Every candidate of the requests ``req``, with features as of each request."""
    cand = pd.read_parquet(settings.world_dir / "candidates.parquet")
    cand = cand.merge(req[[C.REQUEST_ID, C.USER_ID, C.EVENT_TS]], on=C.REQUEST_ID)
    return point_in_time(settings, cand)


def evaluate(
    settings: Settings,
    holdout: pd.DataFrame,
    cutoff: pd.Timestamp,
    light_model: lgb.Booster,
    heavy: HeavyModel,
    weights: dict[str, float],
) -> Evaluation:
    truth = Truth.load(settings.world_dir / TRUTH_FILE)

    # 1. Ranking quality on full candidate sets, judged by the true utility at the top slot.
    requests = pd.read_parquet(settings.world_dir / "requests.parquet")
    ranked = holdout_candidates(settings, requests[requests[C.EVENT_TS] >= cutoff])
    true_heads = truth.score(ranked)
    pred = heavy.predict(ranked, serving_like=True)
    ranked = ranked.assign(
        true_utility=utility(true_heads, weights),
        score_heavy=blend(pred, weights),
        score_light=light_model.predict(light.features_matrix(ranked, serving_like=True)),
        score_chrono=-ranked["chrono_rank"].to_numpy(np.float64),
        score_popular=ranked["post_likes"].fillna(0).to_numpy(np.float64)
        + 1e-6 * ranked["post_impressions"].fillna(0).to_numpy(np.float64),
    )
    metrics: dict[str, float] = {}
    for name in ("heavy", "light", "chrono", "popular"):
        metrics[f"ndcg10_{name}"] = M.mean_ndcg(ranked, f"score_{name}", "true_utility", K)
    metrics["ndcg10_oracle"] = M.mean_ndcg(ranked, "true_utility", "true_utility", K)
    metrics["ndcg10_model"] = metrics["ndcg10_heavy"]

    # 2. Per head, on what was logged (at its logged position): AUC next to the Bayes-optimal
    #    scorer (the true probabilities at that position), and calibration.
    logged = holdout.copy()
    true_logged = truth.score(logged)  # examined, as at the top slot
    at_pos = truth.at_position(true_logged, logged[C.POSITION].to_numpy())
    got = heavy.predict(logged, serving_like=False)
    rel = {}
    for h in HEADS:
        y = logged[TARGETS[h]].to_numpy(np.float64)
        logged[f"pred_{h}"], logged[f"true_{h}"] = got[h], at_pos[h]
        rel[h] = M.reliability(y, got[h])
        if h == "e_dwell":
            # Against the simulator's expected dwell: observed dwell is so noisy (exponential)
            # that even a perfect model scores ~0.02 against it (that figure is kept too).
            metrics["ece_e_dwell"] = M.relative_calibration_error(at_pos[h], got[h])
            metrics["ece_e_dwell_observed"] = M.relative_calibration_error(y, got[h])
            # What serving uses: the head at the top slot, against the examined dwell.
            metrics["ece_e_dwell_slot0"] = M.relative_calibration_error(
                true_logged[h], heavy.predict(logged, serving_like=True)[h]
            )
            continue
        metrics[f"auc_{h[2:]}"] = M.auc(y, got[h])
        metrics[f"auc_{h[2:]}_bayes"] = M.auc(y, at_pos[h])
        metrics[f"ece_{h}"] = M.ece(y, got[h])
        # The same error as a share of the head's mean, as E[dwell]'s is reported: puts the
        # probability heads' calibration and dwell's on one scale.
        metrics[f"rel_ece_{h}"] = M.relative_calibration_error(at_pos[h], got[h])
    metrics["ece"] = max(metrics[f"ece_{h}"] for h in HEADS)

    # 3. Off-policy: SNIPS of the heavy ranker's pages from the logged impressions, against
    #    the true value of those pages (expected utility of the first K slots).
    logged["reward"] = (
        weights["p_like"] * logged[C.LIKE]
        + weights["p_comment"] * logged[C.COMMENT]
        + weights["p_save"] * logged[C.SAVE]
        + weights["e_dwell"] * logged["dwell_s"]
    )
    order = ranked.sort_values(
        [C.REQUEST_ID, "score_heavy"], ascending=[True, False], kind="stable"
    )
    order["slot"] = order.groupby(C.REQUEST_ID).cumcount()
    target = order[order["slot"] < K].set_index([C.REQUEST_ID, C.POST_ID])["slot"]
    first_k = logged[logged[C.POSITION] < K]
    explored = first_k[C.REQUEST_ID].map(requests.set_index(C.REQUEST_ID)["explored"])
    exam = M.examination_curve(first_k, "reward", explored)
    est = M.snips_pbm(first_k, target, "reward", "shown_propensity", exam)
    est_slot = M.snips_by_slot(first_k, target, "reward")
    top = order[order["slot"] < K]
    true_slot = truth.at_position(truth.score(top), top["slot"].to_numpy())
    top = top.assign(value=utility(true_slot, weights))
    served = first_k.groupby(C.POSITION)[C.REQUEST_ID].nunique()
    n_req = logged[C.REQUEST_ID].nunique()
    true_by_slot = top.groupby("slot")["value"].mean()
    slots = sorted(set(est) & set(served.index))
    metrics["snips_estimate"] = float(sum(served[k] / n_req * est[k] for k in slots))
    metrics["true_value"] = float(sum(served[k] / n_req * true_by_slot[k] for k in slots))
    metrics["snips_rel_error"] = abs(metrics["snips_estimate"] / metrics["true_value"] - 1)
    exact = sorted(set(est_slot) & set(served.index))
    metrics["snips_exact_slot_estimate"] = float(
        sum(served[k] / n_req * est_slot[k] for k in exact)
    )
    metrics["snips_exact_slot_rel_error"] = abs(
        metrics["snips_exact_slot_estimate"]
        / float(sum(served[k] / n_req * true_by_slot[k] for k in exact))
        - 1
    )
    metrics["holdout_requests"] = float(ranked[C.REQUEST_ID].nunique())
    metrics["holdout_candidates"] = float(len(ranked))
    metrics["holdout_impressions"] = float(len(logged))
    return Evaluation(metrics, ranked, logged, rel)


def plots(ev: Evaluation, out: Path) -> list[Path]:
    """PNG report: NDCG by policy, reliability diagrams per head, SNIPS against the truth."""
    import matplotlib  # lazy: ~0.3 s with pyplot; plotting only, and Agg chosen here

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: as matplotlib, after use("Agg")

    out.mkdir(parents=True, exist_ok=True)
    m = ev.metrics
    files = []
    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = ["oracle", "heavy", "light", "popular", "chrono"]
    ax.bar(names, [m[f"ndcg10_{n}"] for n in names], color=["#47c", "#3a7", "#8c5", "#cb4", "#999"])
    ax.set_ylabel("NDCG@10 of true utility")
    ax.set_title("Held-out requests, full candidate sets")
    for i, n in enumerate(names):
        ax.text(i, m[f"ndcg10_{n}"], f"{m[f'ndcg10_{n}']:.3f}", ha="center", va="bottom")
    fig.tight_layout()
    files.append(out / "ndcg.png")
    fig.savefig(files[-1], dpi=110)
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.5))
    for ax, h in zip(axes, HEADS, strict=True):
        r = ev.reliability[h]
        hi = max(r["predicted"].max(), r["observed"].max())
        ax.plot([0, hi], [0, hi], color="#bbb", lw=1)
        ax.plot(r["predicted"], r["observed"], "o-", ms=3)
        key = f"ece_{h}"
        ax.set_title(f"{h}  ({'rel. ' if h == 'e_dwell' else ''}ECE {m[key]:.4f})")
        ax.set_xlabel("predicted")
    axes[0].set_ylabel("observed")
    fig.tight_layout()
    files.append(out / "calibration.png")
    fig.savefig(files[-1], dpi=110)
    fig, ax = plt.subplots(figsize=(4, 3.5))
    ax.bar(
        ["SNIPS estimate", "true value"],
        [m["snips_estimate"], m["true_value"]],
        color=["#c74", "#47c"],
    )
    ax.set_title(f"heavy ranker's pages (error {m['snips_rel_error']:.1%})")
    fig.tight_layout()
    files.append(out / "snips.png")
    fig.savefig(files[-1], dpi=110)
    plt.close("all")
    return files


def eval_settings(settings: Settings, config: WorldConfig) -> Settings:
    """Where `feedcast eval` keeps a world: worlds that differ in any parameter (not only seed
    and size) get folders and Feast projects of their own."""
    digest = hashlib.sha1(config.model_dump_json(exclude={"end"}).encode()).hexdigest()[:8]
    name = f"seed{config.seed}-u{config.users}-d{config.days}-{digest}"
    return settings.model_copy(
        update={
            "data_dir": settings.home / "eval" / name,
            "feast_project": f"eval_{digest}",
            "experiment": f"{settings.experiment}-eval",
        }
    )
