"""The promotion gate and the data validation of the retraining pipeline: pure functions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core import constants as C
from pipelines.gate import GATED, decide
from pipelines.validate import (
    ValidationError,
    check_export,
    check_training_set,
    expected_rows,
)

SIGNAL_FEATURE = "user_like_rate_7d"


def _log(n_requests: int = 300, items: int = 10, seed: int = 0) -> pd.DataFrame:
    """A logged holdout whose likes follow a hidden propensity ``p``."""
    rng = np.random.default_rng(seed)
    n = n_requests * items
    p = rng.beta(1, 12, n)
    like = rng.random(n) < p
    comment = rng.random(n) < p / 3
    save = rng.random(n) < p / 4
    label = np.maximum.reduce([np.where(like, 1, 0), np.where(comment, 2, 0), np.where(save, 3, 0)])
    return pd.DataFrame(
        {
            C.REQUEST_ID: np.repeat(np.arange(n_requests), items),
            C.POSITION: np.tile(np.arange(items), n_requests),
            C.USER_ID: rng.integers(1, 50, n),
            C.POST_ID: rng.integers(1, 500, n),
            C.EVENT_TS: pd.Timestamp("2026-11-20", tz="UTC")
            + pd.to_timedelta(np.sort(rng.random(n)) * 86400, unit="s"),
            C.LIKE: like,
            C.COMMENT: comment,
            C.SAVE: save,
            "dwell_s": rng.exponential(3.0, n),
            C.LABEL: label,
            "p": p,
        }
    )


def _scored(log: pd.DataFrame, challenger_noise: float, champion_noise: float, seed: int = 1):
    rng = np.random.default_rng(seed)
    out = log[[C.REQUEST_ID, C.LABEL, C.LIKE, C.COMMENT, C.SAVE]].copy()
    for who, noise in (("challenger", challenger_noise), ("champion", champion_noise)):
        for _, score in GATED.values():
            out[f"{who}_{score}"] = log["p"].to_numpy() + rng.normal(0, noise, len(log))
    return out


def test_gate_promotes_an_equal_or_better_challenger():
    log = _log()
    assert decide(_scored(log, 0.02, 0.02), tolerance=0.005, has_champion=True).promote
    better = decide(_scored(log, 0.01, 0.08), tolerance=0.005, has_champion=True)
    assert better.promote
    assert all(c.delta > 0 for c in better.checks)


def test_gate_refuses_a_clearly_worse_challenger_and_says_which_metric():
    decision = decide(_scored(_log(), 0.2, 0.01), tolerance=0.005, has_champion=True)
    assert not decision.promote
    assert "auc_like" in decision.reason and "worse" in decision.reason
    assert any(not c.passed and c.upper95 < 0 for c in decision.checks)


def test_gate_tolerance_lets_a_hair_worse_challenger_through():
    scored = _scored(_log(), 0.2, 0.01)
    assert decide(scored, tolerance=0.5, has_champion=True).promote


def test_gate_without_a_champion_promotes():
    assert decide(_scored(_log(), 0.5, 0.0), tolerance=0.0, has_champion=False).promote


def _lake_and_export(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    lake = _log(600, seed=seed).drop(columns="p")
    new = _log(150, seed=seed + 1).drop(columns="p")
    new[C.REQUEST_ID] += 10_000
    new[C.EVENT_TS] += pd.Timedelta(days=1)
    return lake, new


def _window(new: pd.DataFrame) -> tuple[pd.Timestamp, pd.Timestamp]:
    return pd.Timestamp("2026-11-21", tz="UTC"), pd.Timestamp("2026-11-22", tz="UTC")


def test_export_check_passes_a_healthy_export():
    lake, new = _lake_and_export()
    report = check_export(new, lake, _window(new), len(new) * 1.1, min_rows_ratio=0.5)
    assert report.problems == []
    assert report.stats["rows"] == len(new)


def test_export_check_catches_missing_rows_nulls_duplicates_and_label_drift():
    lake, new = _lake_and_export()
    half = new.iloc[: len(new) // 3]
    msg = check_export(half, lake, _window(half), len(new), min_rows_ratio=0.5).problems
    assert any("the same hours held over the last week" in m for m in msg)
    broken = new.copy()
    broken.loc[:5, C.USER_ID] = None
    broken = pd.concat([broken, broken.iloc[:3]])
    broken[C.LIKE] = True  # every impression liked
    problems = check_export(broken, lake, _window(broken), None, min_rows_ratio=0.5).problems
    assert any("null user_id" in m for m in problems)
    assert any("duplicate" in m for m in problems)
    assert any(m.startswith("like rate") for m in problems)
    with pytest.raises(ValidationError, match="failed validation"):
        check_export(broken, lake, _window(broken), None, min_rows_ratio=0.5).raise_if_failed("x")


def _training_set(seed: int = 0) -> pd.DataFrame:
    frame = _log(400, seed=seed)
    rng = np.random.default_rng(seed + 7)
    # The user's past like rate: a noisy view of the hidden propensity (as a real feature is).
    frame[SIGNAL_FEATURE] = frame["p"] + rng.normal(0, 0.05, len(frame))
    frame["post_likes"] = rng.poisson(3, len(frame)).astype(float)
    return frame.drop(columns="p")


FEATURES = (SIGNAL_FEATURE, "post_likes")


def test_training_set_check_passes_a_healthy_set():
    frame = _training_set()
    report = check_training_set(frame, expected_rows=len(frame), features=FEATURES)
    assert report.problems == [], report.problems
    assert report.stats["signal_auc"] > 0.6


def test_training_set_check_catches_shuffled_labels():
    frame = _training_set()
    labels = [C.LIKE, C.COMMENT, C.SAVE, C.LABEL, "dwell_s"]
    perm = np.random.default_rng(3).permutation(len(frame))
    shuffled = frame.copy()
    shuffled[labels] = frame[labels].to_numpy()[perm]  # every rate and count unchanged
    report = check_training_set(shuffled, expected_rows=len(frame), features=FEATURES)
    assert any("labels detached" in m for m in report.problems), report.problems


def test_training_set_check_catches_labels_shuffled_in_the_new_rows_only():
    frame = _training_set()
    recent = np.arange(len(frame)) >= len(frame) // 2
    labels = [C.LIKE, C.COMMENT, C.SAVE, C.LABEL, "dwell_s"]
    rows = np.flatnonzero(recent)
    broken = frame.copy()
    broken.iloc[rows, [broken.columns.get_loc(c) for c in labels]] = frame[labels].to_numpy()[
        np.random.default_rng(4).permutation(rows)
    ]
    report = check_training_set(broken, expected_rows=len(frame), features=FEATURES, recent=recent)
    assert report.stats["signal_auc"] > 0.55  # diluted: the whole set still looks fine
    assert any("in the new rows" in m for m in report.problems), report.problems


def test_training_set_check_catches_half_the_rows_missing_and_bad_labels():
    frame = _training_set()
    half = frame.iloc[::2]
    problems = check_training_set(half, expected_rows=len(frame), features=FEATURES).problems
    assert any("50% missing" in m for m in problems)
    bad = frame.copy()
    bad.loc[bad[C.LABEL] == 0, C.LABEL] = 3
    problems = check_training_set(bad, expected_rows=len(bad), features=FEATURES).problems
    assert any("relevance label disagrees" in m for m in problems)
    empty_feature = frame.assign(post_likes=np.nan)
    problems = check_training_set(empty_feature, expected_rows=len(frame), features=FEATURES)
    assert any("mostly null" in m for m in problems.problems)


def test_expected_rows_follow_the_daily_cycle():
    """A week of traffic with 10 rows an hour at night (0–11 h) and 30 by day: a night window
    expects night counts, a day window day counts, a partial hour pro rata."""
    hours = pd.date_range("2026-11-10", periods=7 * 24, freq="h", tz="UTC")
    stamps = [h + pd.Timedelta(minutes=m) for h in hours for m in range(10 if h.hour < 12 else 30)]
    history = pd.Series(stamps)
    night = expected_rows(
        history,
        pd.Timestamp("2026-11-17 00:00", tz="UTC"),
        pd.Timestamp("2026-11-17 06:00", tz="UTC"),
    )
    day = expected_rows(
        history,
        pd.Timestamp("2026-11-17 12:00", tz="UTC"),
        pd.Timestamp("2026-11-17 18:30", tz="UTC"),
    )
    assert night == pytest.approx(60, rel=0.05)
    assert day == pytest.approx(6.5 * 30, rel=0.05)
    assert np.isnan(expected_rows(history.head(100), hours[0], hours[3]))  # under a day of history
