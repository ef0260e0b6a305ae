"""Data validation before training: pure checks that stop a retrain with a message naming the
problem. Nothing here writes; the flow calls these before anything is committed or trained.

Two gates:

- :func:`check_export` on the rows a run exported, before they join the lake: schema, nulls,
  duplicate keys, label rates against the lake's, rows per day against the previous run's.
- :func:`check_training_set` on the point-in-time training set: every lake impression made it
  (a join that drops rows is caught), no nulls where the model needs values, label consistency,
  and a *signal* check — a plain feature must still rank likes above chance. Shuffled labels keep
  every rate and count and fail only that one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core import constants as C
from training.evaluate import auc

LABEL_KINDS = C.ENGAGEMENT_KINDS
KEY = (C.REQUEST_ID, C.POSITION)
# The signal check: the best single feature's AUC for likes (either direction). Real logs have
# several features far from chance (post age, author and post like rates: 0.6+ here); labels
# detached from their rows leave every feature within noise of 0.5.
MIN_SIGNAL_AUC = 0.55
MIN_SIGNAL_ROWS = 1000


class ValidationError(ValueError):
    """A check failed; the message says which and by how much."""


@dataclass(frozen=True)
class Report:
    stats: dict[str, float]
    problems: list[str] = field(default_factory=list)

    def raise_if_failed(self, what: str) -> None:
        if self.problems:
            raise ValidationError(f"{what} failed validation: " + "; ".join(self.problems))


def rows_per_day(frame: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> float:
    days = max((end - start) / pd.Timedelta(days=1), 1e-9)
    return len(frame) / days


def expected_rows(
    history: pd.Series, start: pd.Timestamp, end: pd.Timestamp, days: int = 7
) -> float:
    """How many rows the window [start, end) should hold, from the last ``days`` days of
    ``history`` (event times): the mean count of each hour of the day, summed over the window's
    hours (partial hours pro rata). Traffic has a daily cycle, so a window of night hours is
    judged against night hours, not against a day's average."""
    ts = pd.to_datetime(history, utc=True)
    ts = ts[ts >= ts.max() - pd.Timedelta(days=days)]
    if ts.empty:
        return float("nan")
    hourly = ts.dt.floor("h").value_counts()
    full = pd.date_range(ts.min().ceil("h"), ts.max().floor("h"), freq="h", inclusive="left")
    if len(full) < 24:
        return float("nan")  # less than a day of history: no daily profile yet
    counts = hourly.reindex(full, fill_value=0)
    profile = counts.groupby(counts.index.hour).mean()
    hours = pd.date_range(start.floor("h"), end, freq="h", inclusive="left")
    total = 0.0
    for h in hours:
        overlap = (min(h + pd.Timedelta(hours=1), end) - max(h, start)) / pd.Timedelta(hours=1)
        total += max(overlap, 0.0) * float(profile.get(h.hour, profile.mean()))
    return total


def _rate_band(rate: float, reference: float, n: int) -> tuple[float, float]:
    """Rates a healthy sample of ``n`` rows may show when the long-run rate is ``reference``:
    within half of it either way, widened by 4 binomial standard errors for small samples."""
    se = float(np.sqrt(max(reference * (1 - reference), 1e-12) / max(n, 1)))
    return max(0.0, reference * 0.5 - 4 * se), min(1.0, reference * 1.5 + 4 * se)


def check_export(
    new: pd.DataFrame,
    lake: pd.DataFrame,
    window: tuple[pd.Timestamp, pd.Timestamp],
    expected: float | None,
    *,
    min_rows_ratio: float,
) -> Report:
    """The exported impressions of ``window`` against the lake they are about to join;
    ``expected``: the rows the window should hold (:func:`expected_rows`)."""
    problems: list[str] = []
    missing = [c for c in lake.columns if c not in new.columns]
    if missing:
        problems.append(f"exported impressions lack columns {missing}")
    wrong = [
        f"{c} is {new[c].dtype}, the lake has {lake[c].dtype}"
        for c in lake.columns
        if c in new.columns and new[c].dtype != lake[c].dtype
    ]
    problems.extend(wrong)
    stats: dict[str, float] = {"rows": float(len(new))}
    for c in (C.REQUEST_ID, C.USER_ID, C.POST_ID, C.EVENT_TS, C.POSITION, *LABEL_KINDS):
        if c in new.columns and (nulls := int(new[c].isna().sum())):
            problems.append(f"{nulls} null {c} values")
    if set(KEY) <= set(new.columns) and (dups := int(new.duplicated(list(KEY)).sum())):
        problems.append(f"{dups} duplicate (request_id, position) rows")
    start, end = window
    per_day = rows_per_day(new, start, end)
    stats["rows_per_day"] = per_day
    if expected and np.isfinite(expected):
        ratio = len(new) / expected
        stats["rows_expected"] = expected
        stats["rows_ratio"] = ratio
        if ratio < min_rows_ratio:
            problems.append(
                f"{len(new):,} rows is {ratio:.0%} of the {expected:,.0f} the same hours held over "
                f"the last week (the floor is {min_rows_ratio:.0%})"
            )
    for kind in LABEL_KINDS:
        if kind not in new.columns or kind not in lake.columns or new.empty:
            continue
        rate, ref = float(new[kind].mean()), float(lake[kind].mean())
        stats[f"{kind}_rate"] = rate
        lo, hi = _rate_band(rate, ref, len(new))
        if not lo <= rate <= hi:
            problems.append(
                f"{kind} rate {rate:.4f} is outside [{lo:.4f}, {hi:.4f}] "
                f"around the lake's {ref:.4f}"
            )
    return Report(stats, problems)


def signal_auc(
    reference: pd.DataFrame, target: pd.DataFrame, features: tuple[str, ...], top: int = 3
) -> float:
    """AUC for likes, on ``target``, of a plain score chosen on ``reference``: the ``top``
    features farthest from chance there, oriented, averaged as rank percentiles. One score
    chosen beforehand, so a noise-only target sits at 0.5 ± its sampling error."""
    y = reference[C.LIKE].to_numpy()
    picked: list[tuple[float, str]] = []
    for f in features:
        if f in reference.columns and np.isfinite(a := auc(y, reference[f].fillna(0).to_numpy())):
            picked.append((a, f))
    picked = sorted(picked, key=lambda af: -abs(af[0] - 0.5))[:top]
    if not picked or target[C.LIKE].nunique() < 2:
        return float("nan")
    score = sum(np.sign(a - 0.5) * target[f].fillna(0).rank(pct=True).to_numpy() for a, f in picked)
    return auc(target[C.LIKE].to_numpy(), np.asarray(score, dtype=np.float64))


def check_training_set(
    frame: pd.DataFrame,
    *,
    expected_rows: int,
    features: tuple[str, ...],
    previous: dict[str, float] | None = None,
    recent: np.ndarray | pd.Series | None = None,
) -> Report:
    """The training set as training will read it; ``recent`` marks the rows this run added (the
    signal check runs on them alone too, so labels broken only there are caught)."""
    problems: list[str] = []
    stats: dict[str, float] = {"rows": float(len(frame))}
    if len(frame) != expected_rows:
        share = 1 - len(frame) / expected_rows if expected_rows else 1.0
        problems.append(
            f"{len(frame):,} rows, the lake has {expected_rows:,} impressions "
            f"({share:.0%} {'missing' if share > 0 else 'extra'})"
        )
    absent = [f for f in features if f not in frame.columns]
    if absent:
        problems.append(f"features {absent} are missing")
    if frame.empty:
        problems.append("no rows")
        return Report(stats, problems)
    null_share = {f: float(frame[f].isna().mean()) for f in features if f in frame.columns}
    stats["max_null_share"] = max(null_share.values(), default=0.0)
    if bad := {f: s for f, s in null_share.items() if s > 0.5}:
        problems.append(
            "mostly null features: " + ", ".join(f"{f} ({s:.0%})" for f, s in sorted(bad.items()))
        )
    for kind in LABEL_KINDS:
        stats[f"{kind}_rate"] = float(frame[kind].mean())
    relevance = np.zeros(len(frame), dtype=np.int64)
    for kind in LABEL_KINDS:
        relevance = np.maximum(relevance, np.where(frame[kind], C.RELEVANCE[kind], 0))
    if (bad_labels := int((relevance != frame[C.LABEL].to_numpy()).sum())) > 0:
        problems.append(f"{bad_labels} rows whose relevance label disagrees with their actions")
    if (frame["dwell_s"] < 0).any():
        problems.append("negative dwell times")
    # The whole set: the score chosen on even rows, judged on odd ones. The new rows: chosen on
    # the rows before them (validated by earlier runs), judged on them.
    every = np.arange(len(frame))
    parts = {"signal_auc": (frame.iloc[every % 2 == 0], frame.iloc[every % 2 == 1])}
    if recent is not None:
        mask = np.asarray(recent, dtype=bool)
        parts["signal_auc_recent"] = (frame[~mask], frame[mask])
    for name, (reference, target) in parts.items():
        if min(len(reference), len(target)) < MIN_SIGNAL_ROWS:
            continue
        signal = signal_auc(reference, target, features)
        stats[name] = signal
        floor = MIN_SIGNAL_AUC
        if previous and np.isfinite(previous.get(name, np.nan)):
            # Halfway between chance and what the previous run saw, but never below the floor.
            floor = max(floor, 0.5 + (previous[name] - 0.5) * 0.5)
        if not signal >= floor:
            where = "" if name == "signal_auc" else " in the new rows"
            problems.append(
                f"likes no longer follow the features{where} (AUC {signal:.3f} < {floor:.3f}): "
                "labels detached from their rows?"
            )
    return Report(stats, problems)
