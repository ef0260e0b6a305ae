"""``feedcast ops plot``: the last day (or ``--hours``) as one PNG, from the stack's Prometheus and
the responder's action log: the live request and upload rates against the forecast band, when
each alert fired, and what the responder did.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import redis

from core import cache
from pipelines.responder import recent_actions
from stack import monitoring

# panel -> (axis label, the live rate the band alerts compare)
PANELS = {
    "requests": ("feed requests / s", "feedcast:requests:rate5m"),
    "uploads": ("accepted uploads / s", "feedcast:uploads:rate5m"),
}


def _series(rows: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """The first series of a range result as (epoch s, value) arrays (empty without one)."""
    if not rows:
        return np.zeros(0), np.zeros(0)
    v = np.array(rows[0]["values"], dtype=np.float64).reshape(-1, 2)
    return v[:, 0], v[:, 1]


def gather(settings: Any, hours: float, now: float | None = None) -> dict[str, Any]:
    """Everything the plot shows, as data: per panel the live rate and the band's edges; per
    alert the spans it fired; the responder's actions in the window."""
    end = time.time() if now is None else now
    start = end - hours * 3600.0
    step = max(settings.monitoring_scrape_s, hours * 3600.0 / 720.0)  # ≤ 720 points a series
    out: dict[str, Any] = {"start": start, "end": end, "panels": {}, "alerts": {}}
    for name, (_, live) in PANELS.items():

        def q(promql: str) -> tuple[np.ndarray, np.ndarray]:
            return _series(monitoring.query_range(settings, promql, start, end, step))

        out["panels"][name] = {
            "live": q(live),
            "low": q(f'feedcast:band_low:rps{{series="{name}"}}'),
            "high": q(f'feedcast:band_high:rps{{series="{name}"}}'),
            "median": q(f'max(feedcast_forecast_band_rps{{series="{name}",bound="median"}})'),
        }
    firing = monitoring.query_range(settings, 'ALERTS{alertstate="firing"}', start, end, step)
    for row in firing:
        t = np.array([p[0] for p in row["values"]], dtype=np.float64)
        out["alerts"].setdefault(row["metric"].get("alertname", "?"), []).extend(_spans(t, step))
    try:
        acts: list[dict[str, Any]] | None = recent_actions(settings, cache.client(settings), 100)
    except redis.RedisError:  # the plot without the actions, and says so
        acts = None
    out["actions"] = None if acts is None else [a for a in acts if start <= a["at"] <= end]
    return out


def _spans(t: np.ndarray, step: float) -> list[tuple[float, float]]:
    """Runs of consecutive sample times (at most ``step`` apart) as (first, last + step)."""
    if not len(t):
        return []
    t = np.sort(t)
    breaks = np.flatnonzero(np.diff(t) > step * 1.5)
    firsts = np.r_[t[0], t[breaks + 1]]
    lasts = np.r_[t[breaks], t[-1]]
    return [(float(a), float(b) + step) for a, b in zip(firsts, lasts, strict=True)]


def plot(data: dict[str, Any], path: Path) -> Path:
    """The PNG: a panel per rate (live, band shaded, median dashed), a lane per alert, and the
    responder's actions as vertical lines across every panel."""
    import matplotlib  # lazy: ~0.3 s; plotting only, and Agg chosen here

    matplotlib.use("Agg")
    import matplotlib.dates as mdates  # lazy: as matplotlib, after use("Agg")
    import matplotlib.pyplot as plt  # lazy: as matplotlib, after use("Agg")

    def dt(t: np.ndarray) -> np.ndarray:
        return np.asarray(t, dtype="datetime64[s]")

    names = sorted(data["alerts"])
    fig, axes = plt.subplots(
        3, 1, figsize=(12, 8), sharex=True, height_ratios=[3, 2, max(1, len(names)) * 0.4 + 0.6]
    )
    for ax, (name, (label, _)) in zip(axes, PANELS.items(), strict=False):
        p = data["panels"][name]
        t_lo, lo = p["low"]
        t_hi, hi = p["high"]
        if len(t_lo) and len(t_lo) == len(t_hi):
            ax.fill_between(dt(t_lo), np.maximum(lo, 0), hi, alpha=0.25, color="tab:blue",
                            label="forecast band (95%, widened)")  # fmt: skip
        if len(p["median"][0]):
            ax.plot(dt(p["median"][0]), p["median"][1], "--", lw=0.8, color="tab:blue",
                    label="forecast median")  # fmt: skip
        if len(p["live"][0]):
            ax.plot(dt(p["live"][0]), p["live"][1], lw=1.0, color="black", label="live (5 min)")
        else:
            ax.text(0.5, 0.5, "no series yet", transform=ax.transAxes, ha="center")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="upper right")
    lanes = axes[2]
    for i, name in enumerate(names):
        for a, b in data["alerts"][name]:
            lanes.barh(i, (b - a) / 86400.0, left=dt(np.array([a]))[0], height=0.6,
                       color="tab:red")  # fmt: skip
    lanes.set_yticks(range(len(names)), names, fontsize=8)
    lanes.set_ylim(-0.7, max(len(names), 1) - 0.3)
    lanes.set_title("alerts firing" if names else "no alert fired", fontsize=9)
    for a in data["actions"] or []:
        for ax in axes:
            ax.axvline(dt(np.array([a["at"]]))[0], color="tab:green", lw=1.0)
        axes[0].annotate(f"{a['action']} ({a['alert']})", (dt(np.array([a["at"]]))[0], 1.0),
                         xycoords=("data", "axes fraction"), fontsize=7, rotation=90,
                         va="top", ha="right", color="tab:green")  # fmt: skip
    lanes.set_xlim(dt(np.array([data["start"]]))[0], dt(np.array([data["end"]]))[0])
    lanes.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M"))
    lanes.set_xlabel("UTC")
    hours = (data["end"] - data["start"]) / 3600.0
    acts = "actions unknown (Redis unreachable)" if data["actions"] is None else (
        f"{len(data['actions'])} responder actions (green)"
    )  # fmt: skip
    fig.suptitle(f"feedcast, the last {hours:.3g} h: live rates against the forecast band; {acts}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
