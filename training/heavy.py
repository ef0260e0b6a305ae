"""The heavy ranker: a PyTorch multi-gate mixture-of-experts (MMoE) with four heads.

Inputs are the point-in-time dense features (log1p + standardised) and id embeddings (user,
author, topic, hour of day), with explicit user×topic and user×author products. Heads: p_like,
p_comment, p_save and E[dwell], each what happens *if the item is looked at*.

Position is modelled the position-bias-aware way (PAL): what is observed at slot k is the
examination probability e_k (e_0 = 1, learned for k > 0) times the head, and for dwell
e_k · dwell + (1 - e_k) · skim. Serving scores at slot 0, so the heads are the unbiased ones.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from core import constants as C
from training.dataset import MODEL_FEATURES

HEADS = ("p_like", "p_comment", "p_save", "e_dwell")
TARGETS = {"p_like": C.LIKE, "p_comment": C.COMMENT, "p_save": C.SAVE, "e_dwell": "dwell_s"}
N_POSITIONS = 32
DENSE = tuple(f for f in MODEL_FEATURES if f not in ("hour_of_day",))


def blend(pred: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """The page score: the heads weighted by ``weights`` (Settings.blend_weights)."""
    return np.sum([weights[h] * np.asarray(pred[h], dtype=np.float64) for h in HEADS], axis=0)


@dataclass(frozen=True)
class HeavyParams:
    """Hyperparameters; every field is logged to MLflow."""

    embedding_dim: int = 16
    experts: int = 4
    expert_dim: int = 64
    tower_dim: int = 32
    epochs: int = 12
    batch_size: int = 2048
    learning_rate: float = 2e-3
    weight_decay: float = 1e-6
    validation_days: float = 1.0  # the latest days of training data: early stopping, calibration
    patience: int = 2
    seed: int = 0


@dataclass
class Spec:
    """Everything needed to rebuild inputs at serving time (no pickles)."""

    params: dict[str, float]
    dense: list[str]
    mean: list[float]
    std: list[float]
    users: list[int]
    authors: list[int]
    topics: int
    # scale per head and slot (heads × N_POSITIONS), fitted on the validation days
    calibration: list[list[float]] = field(
        default_factory=lambda: [[1.0] * N_POSITIONS for _ in HEADS]
    )
    # E[dwell] recalibration, fitted on the validation days (:func:`fit_dwell_map`):
    # [scale, power, skim]: an examined item's dwell is scale · head^power and an unexamined
    # one's is skim. None (models saved before it): the head as trained, scaled per slot.
    dwell_map: list[float] | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Spec:
        return cls(**json.loads(text))


class MMoE(nn.Module):
    def __init__(self, n_dense: int, n_users: int, n_authors: int, n_topics: int, p: HeavyParams):
        super().__init__()
        d = p.embedding_dim
        self.user = nn.Embedding(n_users + 1, d)  # index 0: unknown id
        self.author = nn.Embedding(n_authors + 1, d)
        self.topic = nn.Embedding(n_topics + 1, d)
        self.hour = nn.Embedding(24, 4)
        in_dim = n_dense + 5 * d + 4
        self.experts = nn.ModuleList(
            nn.Sequential(
                nn.Linear(in_dim, 128), nn.ReLU(), nn.Linear(128, p.expert_dim), nn.ReLU()
            )
            for _ in range(p.experts)
        )
        self.gates = nn.ModuleList(nn.Linear(in_dim, p.experts) for _ in HEADS)
        self.towers = nn.ModuleList(
            nn.Sequential(
                nn.Linear(p.expert_dim, p.tower_dim), nn.ReLU(), nn.Linear(p.tower_dim, 1)
            )
            for _ in HEADS
        )
        self.examination = nn.Parameter(torch.full((N_POSITIONS - 1,), 2.0))  # logits, k >= 1
        self.skim = nn.Parameter(torch.tensor(-1.0))  # pre-softplus dwell of an unexamined item

    def examined(self, position: torch.Tensor) -> torch.Tensor:
        """e_k: 1 at the top slot, learned below it."""
        e = torch.cat([torch.ones(1), torch.sigmoid(self.examination)])
        return e[position]

    def forward(self, dense, user, author, topic, hour) -> torch.Tensor:
        u, a, t = self.user(user), self.author(author), self.topic(topic)
        x = torch.cat([dense, u, a, t, u * t, u * a, self.hour(hour)], dim=1)
        expert_out = torch.stack([e(x) for e in self.experts], dim=1)  # B × E × D
        outs = []
        for gate, tower in zip(self.gates, self.towers, strict=True):
            w = torch.softmax(gate(x), dim=1).unsqueeze(-1)
            outs.append(tower((w * expert_out).sum(dim=1)))
        return torch.cat(outs, dim=1)  # B × heads: logits (3) and pre-softplus dwell


@dataclass(frozen=True)
class SpecArrays:
    """A spec's lists as arrays, built once per model (serving encodes every request)."""

    mean: np.ndarray
    std: np.ndarray
    users: np.ndarray
    authors: np.ndarray
    calibration: torch.Tensor  # heads × positions

    @staticmethod
    def of(spec: Spec) -> SpecArrays:
        return SpecArrays(
            np.asarray(spec.mean, dtype=np.float64),
            np.asarray(spec.std, dtype=np.float64),
            np.asarray(spec.users, dtype=np.int64),
            np.asarray(spec.authors, dtype=np.int64),
            torch.tensor(spec.calibration, dtype=torch.float32),
        )


def _index(ids: np.ndarray, vocab: np.ndarray) -> np.ndarray:
    pos = np.searchsorted(vocab, ids)
    pos = np.clip(pos, 0, len(vocab) - 1)
    return np.where(vocab[pos] == ids, pos + 1, 0)


def _dense(x: np.ndarray, a: SpecArrays) -> np.ndarray:
    """Raw dense features (rows × spec.dense) → signed log1p, standardised, float32."""
    x = np.sign(x) * np.log1p(np.abs(x))
    x = (x - a.mean) / a.std
    return np.nan_to_num(x, nan=0.0).astype(np.float32)  # unknown → the training mean


def encode(
    spec: Spec,
    dense: np.ndarray,
    users: np.ndarray,
    authors: np.ndarray,
    topics: np.ndarray,
    hours: np.ndarray,
    arrays: SpecArrays | None = None,
) -> list[torch.Tensor]:
    """The network's inputs from plain arrays (the serving path builds no DataFrame);
    ``arrays``: the spec's :class:`SpecArrays` when the caller keeps them."""
    a = arrays or SpecArrays.of(spec)
    return [
        torch.from_numpy(_dense(np.asarray(dense, dtype=np.float64), a)),
        torch.from_numpy(_index(np.asarray(users, dtype=np.int64), a.users)),
        torch.from_numpy(_index(np.asarray(authors, dtype=np.int64), a.authors)),
        torch.from_numpy(np.clip(np.asarray(topics, dtype=np.int64) + 1, 0, spec.topics)),
        torch.from_numpy(np.nan_to_num(np.asarray(hours, dtype=np.float64)).astype(np.int64) % 24),
    ]


def tensors(frame: pd.DataFrame, spec: Spec) -> list[torch.Tensor]:
    return encode(
        spec,
        frame[spec.dense].to_numpy(np.float64),
        frame[C.USER_ID].to_numpy(),
        frame[C.AUTHOR_ID].to_numpy(),
        frame[C.TOPIC].to_numpy(),
        frame["hour_of_day"].to_numpy(np.float64),
    )


def _positions(frame: pd.DataFrame) -> torch.Tensor:
    return torch.from_numpy(np.clip(frame[C.POSITION].to_numpy(np.int64), 0, N_POSITIONS - 1))


def observed(
    net: MMoE,
    out: torch.Tensor,
    position: torch.Tensor,
    dwell_map: list[float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities, dwell) as observed at ``position``: examination × head (PAL); an
    unexamined item's dwell is the skim. ``dwell_map`` ([scale, power, skim], see
    :func:`fit_dwell_map`) replaces the dwell head by scale · head^power and the skim."""
    e = net.examined(position)
    head: torch.Tensor = nn.functional.softplus(out[:, 3])
    skim: torch.Tensor | float = nn.functional.softplus(net.skim)
    if dwell_map is not None:
        scale, power, skim = dwell_map
        head = scale * head.clamp_min(1e-6) ** power
    return e.unsqueeze(1) * torch.sigmoid(out[:, :3]), e * head + (1 - e) * skim


@dataclass
class HeavyModel:
    net: MMoE
    spec: Spec
    arrays: SpecArrays = field(init=False)

    def __post_init__(self) -> None:
        self.arrays = SpecArrays.of(self.spec)

    def predict(self, frame: pd.DataFrame, *, serving_like: bool = True) -> dict[str, np.ndarray]:
        """Head predictions; ``serving_like`` scores every item as if shown first."""
        return self.predict_tensors(
            tensors(frame, self.spec), None if serving_like else _positions(frame)
        )

    @torch.inference_mode()
    def predict_tensors(
        self, inputs: list[torch.Tensor], position: torch.Tensor | None = None
    ) -> dict[str, np.ndarray]:
        """Heads for encoded inputs (:func:`encode`); no ``position`` = every item at slot 0."""
        if self.net.training:  # eval() walks every module: only when it is needed
            self.net.eval()
        return self.heads(self.net(*inputs), position)

    @torch.no_grad()
    def heads(
        self, out: torch.Tensor, position: torch.Tensor | None = None
    ) -> dict[str, np.ndarray]:
        """:meth:`predict_tensors` from the net's outputs ``out``, calibrated."""
        pos = torch.zeros(len(out), dtype=torch.long) if position is None else position
        probs, dwell = observed(self.net, out, pos, self.spec.dwell_map)  # e_0 = 1: the heads
        scale = self.arrays.calibration[:, pos].T  # rows × heads
        probs, dwell = (probs * scale[:, :3]).clamp(0, 1), dwell * scale[:, 3]
        res = {h: probs[:, i].numpy().astype(np.float64) for i, h in enumerate(HEADS[:3])}
        res["e_dwell"] = dwell.numpy().astype(np.float64)
        return res

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(self.net.state_dict(), folder / "weights.pt")
        (folder / "spec.json").write_text(self.spec.to_json())

    @classmethod
    def load(cls, folder: Path) -> HeavyModel:
        """Weights are read with ``weights_only=True``: tensors only, never arbitrary objects."""
        spec = Spec.from_json((folder / "spec.json").read_text())
        net = _build(spec)
        net.load_state_dict(torch.load(folder / "weights.pt", weights_only=True))
        net.eval()
        return cls(net, spec)


def _build(spec: Spec) -> MMoE:
    p = HeavyParams(**spec.params)  # type: ignore[arg-type]
    return MMoE(len(spec.dense), len(spec.users), len(spec.authors), spec.topics, p)


def fit_spec(train_df: pd.DataFrame, params: HeavyParams) -> Spec:
    x = train_df[list(DENSE)].to_numpy(np.float64)
    x = np.sign(x) * np.log1p(np.abs(x))
    mean, std = np.nanmean(x, axis=0), np.nanstd(x, axis=0)
    std = np.where(std > 1e-9, std, 1.0)
    return Spec(
        params=asdict(params),
        dense=list(DENSE),
        mean=mean.tolist(),
        std=std.tolist(),
        users=sorted(int(u) for u in train_df[C.USER_ID].unique()),
        authors=sorted(int(a) for a in train_df[C.AUTHOR_ID].unique()),
        topics=int(train_df[C.TOPIC].max()) + 2,
    )


def _loss(
    net: MMoE,
    inputs: list[torch.Tensor],
    y: torch.Tensor,
    forward: Callable[..., torch.Tensor] | None = None,
) -> torch.Tensor:
    """``forward``: what runs the net (a DistributedDataParallel wrapper of it); ``net`` itself
    by default."""
    *x, pos = inputs
    probs, dwell = observed(net, (forward or net)(*x), pos)
    bce = nn.functional.binary_cross_entropy(probs.clamp(1e-6, 1 - 1e-6), y[:, :3])
    # Gamma deviance: a proper loss for the mean of a skewed, positive target (dwell is
    # exponential-like); squared error lets a few long dwells dominate and overshoots.
    ratio = y[:, 3].clamp_min(1e-3) / dwell.clamp_min(1e-3)
    return 3 * bce + (ratio - torch.log(ratio) - 1).mean()


def _targets(frame: pd.DataFrame) -> torch.Tensor:
    return torch.from_numpy(
        np.stack([frame[TARGETS[h]].to_numpy(np.float32) for h in HEADS], axis=1)
    )


def _all_rows(frame: pd.DataFrame) -> pd.DataFrame:
    return frame


def _unwrapped(net: nn.Module) -> nn.Module:
    return net


def _own_value(value: float) -> float:
    return value


@dataclass(frozen=True)
class Replica:
    """One process of a data-parallel fit (``training.distributed``); the default is the whole
    fit in this one process.

    Every replica fits the same spec on all the fitting rows (vocabularies and scales must
    agree), trains on its own ``rows`` with a 1/``world`` share of the batch, and takes the
    decisions (steps per epoch, early stopping) that ``agree`` makes common to all.
    """

    rank: int = 0
    world: int = 1
    rows: Callable[[pd.DataFrame], pd.DataFrame] = _all_rows  # this replica's share
    wrap: Callable[[nn.Module], nn.Module] = _unwrapped  # e.g. into DistributedDataParallel
    agree: Callable[[float], float] = _own_value  # the largest value over all replicas


def train(
    train_df: pd.DataFrame,
    params: HeavyParams,
    progress: bool = False,
    *,
    replica: Replica | None = None,
) -> HeavyModel:
    """Fit on all but the latest ``validation_days``; stop when the validation loss stops
    improving; then scale each probability head per slot so that its mean matches the
    validation days, and fit E[dwell]'s three-number map (:func:`fit_dwell_map`) there: both
    on data later than anything the net was trained on.

    ``replica``: this process's part of a data-parallel fit; by default the whole fit."""
    rep = replica or Replica()
    torch.manual_seed(params.seed)
    torch.use_deterministic_algorithms(True)
    cutoff = train_df[C.EVENT_TS].max() - pd.Timedelta(days=params.validation_days)
    fit_df, val_df = (
        train_df[train_df[C.EVENT_TS] < cutoff],
        train_df[train_df[C.EVENT_TS] >= cutoff],
    )
    spec = fit_spec(fit_df, params)
    net = _build(spec)
    exam = examination_from_randomised(fit_df)
    if exam is not None:  # measured on randomised pages: fixed, not learned
        e = np.clip(exam[1:], 1e-4, 1 - 1e-4)
        net.examination.data = torch.from_numpy(np.log(e / (1 - e)).astype(np.float32))
        net.examination.requires_grad_(False)
    stepper = rep.wrap(net)
    own = rep.rows(fit_df)
    if own.empty:
        raise ValueError(f"replica {rep.rank} of {rep.world} has no training rows")
    inputs, y = [*tensors(own, spec), _positions(own)], _targets(own)
    val_inputs, val_y = [*tensors(val_df, spec), _positions(val_df)], _targets(val_df)
    opt = torch.optim.Adam(
        stepper.parameters(), lr=params.learning_rate, weight_decay=params.weight_decay
    )
    gen = torch.Generator().manual_seed(params.seed + rep.rank)
    n = len(own)
    # Small data still gets ~50 steps an epoch: a few large batches leave the net untrained.
    # The batch is the whole fit's, split across the replicas, so the steps are the same.
    batch = -(-min(params.batch_size, max(256, len(fit_df) // 50)) // rep.world)
    # Every replica takes as many steps as the largest share needs (DDP meets at each step);
    # a smaller share wraps around its permutation.
    per_epoch = -(-int(rep.agree(n)) // batch)
    best, best_state, stale = float("inf"), copy.deepcopy(net.state_dict()), 0
    with tqdm(
        total=params.epochs * per_epoch,
        desc="heavy ranker",
        unit="batch",
        disable=not progress or rep.rank != 0,
    ) as bar:
        for _epoch in range(params.epochs):
            stepper.train()
            perm = torch.randperm(n, generator=gen)
            for step in range(per_epoch):
                start = step * batch % n
                idx = perm[start : start + batch]
                loss = _loss(net, [t[idx] for t in inputs], y[idx], stepper)
                opt.zero_grad()
                loss.backward()
                opt.step()
                bar.update(1)
            net.eval()
            with torch.no_grad():
                val = rep.agree(float(_loss(net, val_inputs, val_y)))
            bar.set_postfix(val_loss=f"{val:.4f}")
            if val < best - 1e-5:
                best, best_state, stale = val, copy.deepcopy(net.state_dict()), 0
            else:
                stale += 1
                if stale > params.patience:
                    break
    net.load_state_dict(best_state)
    net.eval()
    model = HeavyModel(net, spec)
    *val_x, val_pos = val_inputs
    with torch.no_grad():  # one pass over the validation days serves both calibrations
        out = net(*val_x)
        head = nn.functional.softplus(out[:, 3]).numpy()
        exam = net.examined(val_pos).numpy()
        skim = float(nn.functional.softplus(net.skim))
    spec.calibration = fit_calibration(val_df, model.heads(out, val_pos))
    spec.dwell_map = fit_dwell_map(val_df[TARGETS["e_dwell"]].to_numpy(), head, exam, skim)
    if spec.dwell_map is not None:  # the map replaces the per-slot scale for dwell
        spec.calibration[HEADS.index("e_dwell")] = [1.0] * N_POSITIONS
    return HeavyModel(net, spec)  # anew: its arrays are the spec's final calibration


def examination_from_randomised(frame: pd.DataFrame, min_events: int = 200) -> np.ndarray | None:
    """e_k for every slot, from the pages the logging policy showed in random order.

    On a randomised page every item is equally likely at every slot, so the engagement rate per
    slot is proportional to e_k (result randomisation, Joachims et al. 2017). Learning e_k
    jointly with the heads (PAL) is confounded on the other pages, whose order follows features
    the heads also see (newest first: position tracks post age); measured here, PAL put
    e_1 at 0.96 where the randomised pages say 0.71. A power law e_k = (1 + k)^-η is fitted by
    weighted least squares on the log ratios (weights: events per slot), so that slots with
    few randomised rows still get a value. None when the log holds too few randomised events
    (a service that never explores): the heads then learn e_k themselves.
    """
    if "explored" not in frame or not frame["explored"].any():
        return None
    rows = frame[frame["explored"].to_numpy(bool)]
    pos = np.clip(rows[C.POSITION].to_numpy(np.int64), 0, N_POSITIONS - 1)
    hits = rows[C.LIKE].to_numpy(np.float64)
    n = np.bincount(pos, minlength=N_POSITIONS).astype(np.float64)
    k = np.bincount(pos, weights=hits, minlength=N_POSITIONS)
    if hits.sum() < min_events or k[0] < min_events / 10:
        return None
    ok = (k > 0) & (np.arange(N_POSITIONS) > 0)
    if not ok.any():
        return None
    ratio = np.log((k[ok] / n[ok]) / (k[0] / n[0]))
    x = np.log1p(np.arange(N_POSITIONS)[ok])
    w = 1.0 / (1.0 / k[ok] + 1.0 / k[0])  # inverse variance of a log ratio of counts
    eta = max(float(-(w * x * ratio).sum() / (w * x * x).sum()), 0.0)
    return (1.0 + np.arange(N_POSITIONS)) ** -eta


def fit_dwell_map(
    dwell: np.ndarray,
    head: np.ndarray,
    examined: np.ndarray,
    skim: float,
    min_rows: int = 1000,
) -> list[float] | None:
    """[scale, power, skim] for E[dwell], by Gamma deviance on the validation days.

    A net fitted on a few hundred rows per user spreads its dwell head too wide: on the
    held-out days the lowest twentieth of predictions comes out ~9% short and the highest ~4%
    long (a per-slot scale cannot fix a slope). Three numbers fitted on every validation row
    can: the head becomes scale · head^power, and an unexamined item's dwell a fitted skim.
    Equal-mass bin maps (isotonic, 20 bins) were tried first and transfer worse: each bin's
    mean of an exponential-like target carries ~2-3% noise, as much as the effect. None when
    there are fewer than ``min_rows`` rows: the head stays as trained.
    """
    from scipy.optimize import minimize  # lazy: ~0.2 s; loading a model (heavy_pyfunc) never fits

    y = np.maximum(np.asarray(dwell, dtype=np.float64), 1e-3)
    d = np.maximum(np.asarray(head, dtype=np.float64), 1e-6)
    e = np.asarray(examined, dtype=np.float64)
    if len(y) < min_rows:
        return None

    def deviance(x: np.ndarray) -> float:
        power = float(np.clip(x[1], 0.5, 1.5))
        mu = e * np.exp(x[0]) * d**power + (1 - e) * np.exp(x[2])
        r = y / mu
        return float(np.mean(r - np.log(r) - 1))

    start = np.array([0.0, 1.0, np.log(max(skim, 1e-3))])
    best = minimize(deviance, start, method="Nelder-Mead", options={"xatol": 1e-5, "fatol": 1e-10})
    if not np.isfinite(best.fun) or best.fun > deviance(start):
        return None
    return [float(np.exp(best.x[0])), float(np.clip(best.x[1], 0.5, 1.5)), float(np.exp(best.x[2]))]


def fit_calibration(
    val_df: pd.DataFrame, got: dict[str, np.ndarray], prior: float = 500.0
) -> list[list[float]]:
    """Observed ÷ predicted per head and slot, shrunk towards the head's overall ratio when a
    slot has few rows. Serving scores at slot 0, so slot 0's factor is the one that matters."""
    pos = np.clip(val_df[C.POSITION].to_numpy(np.int64), 0, N_POSITIONS - 1)
    out = []
    for h in HEADS:
        y = val_df[TARGETS[h]].to_numpy(np.float64)
        overall = y.sum() / max(got[h].sum(), 1e-9)
        ys = np.bincount(pos, weights=y, minlength=N_POSITIONS)
        ps = np.bincount(pos, weights=got[h], minlength=N_POSITIONS)
        mean_p = got[h].mean() if len(got[h]) else 0.0
        # ratio = (Σy + prior·mean_p·overall) / (Σp + prior·mean_p): shrinks to `overall`
        out.append(((ys + prior * mean_p * overall) / (ps + prior * mean_p + 1e-12)).tolist())
    return out
