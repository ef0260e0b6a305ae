"""How close to the Bayes-optimal AUC can a model learned from this world's logs come?

The Bayes-optimal AUC scores with the true probabilities; a learned model must estimate them
from the logs, and on the default world a user has only ~35 likes in the training days. This
reference fits the simulator's *own* functional form, knowing which hidden parameter enters
where (a logit that adds the user's taste for the post's topic, the author's and the post's
quality, the affinity of a followed pair, an in-network bonus and a recency slope, times an
examination probability per slot), by ridge-penalised maximum likelihood on the same training
rows the rankers see, and scores the same held-out impressions. It is a judge's tool, given
more than any ranker may know (the true model's form, the follow graph and post ages from the
truth); a ranker near it has taken what the data hold, and the rest of the gap to Bayes is
estimation noise that only more data closes.

Run: ``python -m bench.learnability [--seed N]`` (generates the evaluation world if needed);
``make bench`` records it for every ranking world. It reads the truth, so it lives in
``evaluation``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from core import constants as C
from core.settings import Settings
from simulator.truth import Truth
from simulator.writer import TRUTH_FILE
from training import evaluate as M
from training.dataset import time_split, training_frame

N_POSITIONS = 32
PENALTIES = (3e-6, 1e-5)  # the better one on the held-out day is kept (favours the reference)


def _encode(truth: Truth, frame: pd.DataFrame) -> dict[str, torch.Tensor]:
    n_authors, n_topics = len(truth.author_ids), truth.taste.shape[1]
    u = np.searchsorted(truth.user_ids, frame[C.USER_ID].to_numpy())
    p = np.searchsorted(truth.post_ids, frame[C.POST_ID].to_numpy())
    a = truth.post_author[p]
    ts = pd.to_datetime(frame[C.EVENT_TS], utc=True).astype("int64").to_numpy() / 1e9
    age = np.maximum((ts - truth.param("start_epoch_s")) / 3600 - truth.post_hour[p], 0)
    edges = np.sort(truth.follow_user * n_authors + truth.follow_author)
    q = u * n_authors + a
    at = np.clip(np.searchsorted(edges, q), 0, len(edges) - 1)
    followed = edges[at] == q
    return {
        "user_topic": torch.from_numpy(u * n_topics + truth.post_topic[p]),
        "user": torch.from_numpy(u),
        "author": torch.from_numpy(a),
        "post": torch.from_numpy(p),
        "edge": torch.from_numpy(np.where(followed, at + 1, 0)),
        "followed": torch.from_numpy(followed.astype(np.float32)),
        "age": torch.from_numpy(age.astype(np.float32)),
        "slot": torch.from_numpy(np.clip(frame[C.POSITION].to_numpy(), 0, N_POSITIONS - 1)),
    }


def _fit(
    truth: Truth, x: dict[str, torch.Tensor], y: torch.Tensor, penalty: float, steps: int
) -> dict[str, torch.Tensor]:
    sizes = {
        "user_topic": truth.taste.size,
        "user": len(truth.user_ids),
        "author": len(truth.author_ids),
        "post": len(truth.post_ids),
        "edge": len(truth.follow_user) + 1,
    }
    w = {k: torch.zeros(n, requires_grad=True) for k, n in sizes.items()}
    scalars = {
        "base": torch.tensor(-2.0, requires_grad=True),
        "in_network": torch.tensor(0.0, requires_grad=True),
        "recency": torch.tensor(0.0, requires_grad=True),
        "examination": torch.full((N_POSITIONS - 1,), 2.0, requires_grad=True),
    }
    opt = torch.optim.Adam([*w.values(), *scalars.values()], lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        prob = _predict(w, scalars, x).clamp(1e-6, 1 - 1e-6)
        loss = torch.nn.functional.binary_cross_entropy(prob, y)
        loss = loss + penalty * sum((v**2).sum() for v in w.values())
        loss.backward()
        opt.step()
    return {**w, **scalars}


def _predict(
    w: dict[str, torch.Tensor], s: dict[str, torch.Tensor], x: dict[str, torch.Tensor]
) -> torch.Tensor:
    logit = (
        s["base"]
        + w["user_topic"][x["user_topic"]]
        + w["user"][x["user"]]
        + w["author"][x["author"]]
        + w["post"][x["post"]]
        + (w["edge"][x["edge"]] + s["in_network"]) * x["followed"]
        - s["recency"] * x["age"]
    )
    exam = torch.cat([torch.ones(1), torch.sigmoid(s["examination"])])[x["slot"]]
    return exam * torch.sigmoid(logit)


def structured_auc(
    settings: Settings,
    frame: pd.DataFrame | None = None,
    holdout_days: float = 1.0,
    steps: int = 300,
) -> dict[str, float]:
    """AUC(like) on the held-out impressions: the structured reference, and Bayes."""
    truth = Truth.load(settings.world_dir / TRUTH_FILE)
    split = time_split(frame if frame is not None else training_frame(settings), holdout_days)
    x_train, x_hold = _encode(truth, split.train), _encode(truth, split.holdout)
    y_train = torch.from_numpy(split.train[C.LIKE].to_numpy(np.float32))
    y_hold = split.holdout[C.LIKE].to_numpy(np.float64)
    best = 0.0
    for penalty in PENALTIES:
        params = _fit(truth, x_train, y_train, penalty, steps)
        with torch.no_grad():
            got = _predict(params, params, x_hold).numpy()
        best = max(best, M.auc(y_hold, got))
    bayes = truth.at_position(truth.score(split.holdout), split.holdout[C.POSITION].to_numpy())
    return {
        "auc_like_structured_mle": float(best),
        "auc_like_bayes": float(M.auc(y_hold, bayes["p_like"])),
    }
