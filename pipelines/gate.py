"""The promotion gate: may a challenger replace the champion? Pure functions.

Both models are scored on the same holdout (the rows the run exported, which the champion never
trained on). For every gated metric the gate looks at the paired difference challenger −
champion, with a bootstrap over requests (a page's items rise and fall together, so requests are
the unit). A challenger is refused when, on any gated metric, it is worse by more than the
tolerance *and* the bootstrap says so with 95% confidence over all gated metrics together
(Bonferroni: each upper bound at 1 − 5%/m is below zero). The confidence part keeps sampling
noise on a small holdout from refusing a model that is as good; the tolerance keeps a large
holdout from refusing one that is worse by a hair.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core import constants as C
from training import evaluate as M

K = 10
BOOTSTRAP = 100


@dataclass(frozen=True)
class MetricCheck:
    name: str
    challenger: float
    champion: float
    delta: float
    upper95: float
    passed: bool


@dataclass(frozen=True)
class Decision:
    promote: bool
    checks: list[MetricCheck]
    reason: str

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for c in self.checks:
            out[f"gate_{c.name}_challenger"] = c.challenger
            out[f"gate_{c.name}_champion"] = c.champion
            out[f"gate_{c.name}_delta"] = c.delta
        return out


Metric = Callable[[pd.DataFrame, str], float]


def _auc(label: str) -> Metric:
    return lambda f, col: M.auc(f[label].to_numpy(), f[col].to_numpy())


def _ndcg(f: pd.DataFrame, col: str) -> float:
    return M.mean_ndcg(f, col, C.LABEL, K)


# metric name → (function of a frame and a score column, the score it reads: <model>_<score>)
GATED: dict[str, tuple[Metric, str]] = {
    "auc_like": (_auc(C.LIKE), "p_like"),
    "auc_comment": (_auc(C.COMMENT), "p_comment"),
    "auc_save": (_auc(C.SAVE), "p_save"),
    "ndcg10_heavy": (_ndcg, "blend"),
    "ndcg10_light": (_ndcg, "light"),
}


def _resamples(requests: np.ndarray, n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.choice(requests, size=len(requests), replace=True) for _ in range(n)]


def decide(
    scored: pd.DataFrame,
    *,
    tolerance: float,
    has_champion: bool,
    bootstrap: int = BOOTSTRAP,
    seed: int = 0,
) -> Decision:
    """``scored`` has the holdout's labels and, per gated score, ``challenger_<s>`` and (when
    there is a champion) ``champion_<s>`` columns."""
    if not has_champion:
        return Decision(True, [], "no champion yet: the first model is promoted")
    rows = scored.groupby(C.REQUEST_ID, sort=False).indices
    requests = np.array(list(rows))
    sizes = {r: len(ix) for r, ix in rows.items()}
    gated = []
    for name, (fn, score) in GATED.items():
        a, b = f"challenger_{score}", f"champion_{score}"
        ch, cp = fn(scored, a), fn(scored, b)
        if np.isfinite(ch) and np.isfinite(cp):  # not, e.g., with no positive in the holdout
            gated.append((name, fn, a, b, ch, cp))
    deltas: dict[str, list[float]] = {g[0]: [] for g in gated}
    for draw in _resamples(requests, bootstrap, seed):
        # A request drawn twice counts as two requests: renumber them per draw.
        sub = scored.iloc[np.concatenate([rows[r] for r in draw])].assign(
            **{C.REQUEST_ID: np.repeat(np.arange(len(draw)), [sizes[r] for r in draw])}
        )
        for name, fn, a, b, _, _ in gated:
            if np.isfinite(d := fn(sub, a) - fn(sub, b)):
                deltas[name].append(d)
    checks: list[MetricCheck] = []
    for name, _, _, _, ch, cp in gated:
        # Bonferroni: m metrics each tested at 5%/m, so an equal challenger is refused by
        # chance in at most 5% of runs, not in up to m × 5%.
        q = 1 - 0.05 / max(len(gated), 1)
        upper = float(np.quantile(deltas[name], q)) if deltas[name] else float("nan")
        worse = ch - cp < -tolerance and upper < 0
        checks.append(MetricCheck(name, ch, cp, ch - cp, upper, not worse))
    failed = [c for c in checks if not c.passed]
    if failed:
        reason = "; ".join(
            f"{c.name} {c.challenger:.4f} vs champion {c.champion:.4f} "
            f"(Δ {c.delta:+.4f}, 95% upper bound {c.upper95:+.4f}, tolerance {tolerance})"
            for c in failed
        )
        return Decision(False, checks, f"challenger is worse: {reason}")
    return Decision(
        True, checks, f"no gated metric worse beyond {tolerance} ({len(checks)} checked)"
    )
