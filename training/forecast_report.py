"""Pictures of a backtest: each variant's last fold, forecast vs actual with its intervals."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.forecast_backtest import Fold


def plot(folds: list[Fold], path: Path) -> Path:
    """One panel per variant: actual, true rate, our median with 80/95% bands, weekly naive."""
    import matplotlib  # lazy: ~0.3 s with pyplot; plotting only, and Agg chosen here

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: as matplotlib, after use("Agg")

    variants = list(dict.fromkeys(f.variant for f in folds))
    fig, axes = plt.subplots(len(variants), 1, figsize=(11, 2.8 * len(variants)), squeeze=False)
    for ax, v in zip(axes[:, 0], variants, strict=True):
        last = max(f.fold for f in folds if f.variant == v)
        by = {f.method: f for f in folds if f.variant == v and f.fold == last}
        ours, x = by["ours"], np.arange(len(by["ours"].actual))
        q = ours.quantiles
        ax.fill_between(x, q[0.025], q[0.975], alpha=0.2, color="C0", label="ours 95%")
        ax.fill_between(x, q[0.1], q[0.9], alpha=0.3, color="C0", label="ours 80%")
        ax.plot(x, q[0.5], color="C0", lw=1.2, label="ours median")
        ax.plot(x, ours.actual, color="k", lw=0.8, label="actual")
        ax.plot(x, by["floor"].quantiles[0.5], color="C2", lw=0.8, ls="--", label="true rate")
        ax.plot(
            x, by["snaive168"].quantiles[0.5], color="C3", lw=0.6, alpha=0.7, label="snaive 168"
        )
        ax.set_title(f"{v}: fold {last}, requests per hour, 168 h ahead")
        ax.set_xlabel("hours after origin")
    axes[0, 0].legend(ncol=6, fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
