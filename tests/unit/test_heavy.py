"""The heavy ranker on synthetic rows: it learns, calibrates per slot, and round-trips."""

import numpy as np
import pandas as pd
import pytest

from core import constants as C
from training import heavy


def frame(n: int = 6000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({c: rng.normal(0, 1, n) for c in heavy.DENSE})
    df[C.USER_ID] = rng.integers(1, 50, n)
    df[C.AUTHOR_ID] = rng.integers(1, 20, n)
    df[C.TOPIC] = rng.integers(0, 4, n)
    df["hour_of_day"] = rng.integers(0, 24, n).astype(float)
    df[C.POSITION] = rng.integers(0, 10, n)
    df[C.EVENT_TS] = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(
        np.sort(rng.uniform(0, 72, n)), unit="h"
    )
    exam = 1.0 / (1.0 + df[C.POSITION]) ** 0.5
    p = 1 / (1 + np.exp(-(df[heavy.DENSE[0]] * 3.0 - 1.5)))  # one informative feature
    seen = rng.random(n) < exam
    for col, scale in ((C.LIKE, 1.0), (C.COMMENT, 0.3), (C.SAVE, 0.2)):
        df[col] = seen & (rng.random(n) < p * scale)
    df["dwell_s"] = np.where(seen, rng.exponential(2 + 4 * p), rng.exponential(0.3, n))
    return df


def test_it_learns_the_signal_and_round_trips(tmp_path):
    df = frame()
    model = heavy.train(df, heavy.HeavyParams(epochs=10, batch_size=256, patience=3))
    test = frame(2000, seed=1)
    got = model.predict(test, serving_like=False)
    from training.evaluate import auc

    assert auc(test[C.LIKE], got["p_like"]) > 0.65
    model.save(tmp_path / "m")
    again = heavy.HeavyModel.load(tmp_path / "m")
    for h, v in again.predict(test).items():
        np.testing.assert_allclose(v, model.predict(test)[h], rtol=1e-6)


def test_slot_calibration_fixes_a_slot_the_model_gets_wrong():
    df = frame(4000)
    got = {h: np.full(len(df), 0.1) for h in heavy.HEADS}
    df[C.LIKE] = df[C.POSITION] == 0  # everything at slot 0 is liked, nothing below
    factors = heavy.fit_calibration(df, got, prior=1.0)
    like = factors[heavy.HEADS.index("p_like")]
    assert like[0] == pytest.approx(10.0, rel=0.05)
    assert like[5] == pytest.approx(0.0, abs=0.05)
