"""The heavy ranker on synthetic rows: it learns, calibrates per slot, and round-trips."""

import numpy as np
import pandas as pd
import pytest
import torch

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


def confounded(n: int = 40_000, eta: float = 0.5, seed: int = 2) -> pd.DataFrame:
    """Pages of 10 whose order follows the informative feature (best first) on 70% of them, and
    is random on the rest, like the simulator's logging policy."""
    rng = np.random.default_rng(seed)
    df = frame(n, seed)
    pages = n // 10
    df = df.iloc[: pages * 10].copy()
    page = np.repeat(np.arange(pages), 10)
    explored = np.repeat(rng.random(pages) < 0.3, 10)
    x = df[heavy.DENSE[0]].to_numpy()
    rank = pd.Series(-x).groupby(page).rank(method="first").to_numpy() - 1
    df[C.POSITION] = np.where(explored, np.tile(np.arange(10), pages), rank).astype(int)
    df["explored"] = explored
    p = 1 / (1 + np.exp(-(x * 3.0 - 1.5)))
    seen = rng.random(len(df)) < (1.0 + df[C.POSITION]) ** -eta
    df[C.LIKE] = seen & (rng.random(len(df)) < p)
    return df


def test_examination_comes_from_the_randomised_pages():
    df = confounded(eta=0.5)
    e = heavy.examination_from_randomised(df)
    assert e is not None and e[0] == 1.0
    truth = (1.0 + np.arange(heavy.N_POSITIONS)) ** -0.5
    np.testing.assert_allclose(e[:10], truth[:10], atol=0.04)
    # the ranked pages alone would say otherwise: the best items sit at the top
    ranked = df[~df["explored"]]
    naive = ranked.groupby(C.POSITION)[C.LIKE].mean()
    assert naive.iloc[5] / naive.iloc[0] < truth[5] - 0.15


def test_no_randomised_pages_means_no_estimate():
    df = confounded()
    assert heavy.examination_from_randomised(df.assign(explored=False)) is None
    assert heavy.examination_from_randomised(df.drop(columns="explored")) is None


def test_training_fixes_the_measured_examination_curve():
    df = confounded(20_000, eta=0.7)
    model = heavy.train(df, heavy.HeavyParams(epochs=2, batch_size=512))
    learned = model.net.examined(torch.arange(10)).detach().numpy()
    np.testing.assert_allclose(
        learned,
        heavy.examination_from_randomised(
            df[df[C.EVENT_TS] < df[C.EVENT_TS].max() - pd.Timedelta(days=1)]
        )[:10],
        rtol=1e-5,
    )
    assert not model.net.examination.requires_grad


def test_dwell_map_takes_the_spread_out_of_an_overdispersed_head():
    """A head that spreads E[dwell] too wide (true^1.25, 10% low) is put back by three numbers
    fitted on noisy observed dwell; too few rows leave the head alone."""
    from training.evaluate import relative_calibration_error

    rng = np.random.default_rng(3)
    n = 40_000
    true = np.exp(rng.normal(1.0, 0.5, n))  # examined dwell, seconds
    e = (1.0 + rng.integers(0, 10, n)) ** -0.5
    expected = e * true + (1 - e) * 0.4  # at the logged slot, skim 0.4 s
    observed = rng.exponential(expected)
    head = 0.9 * true**1.25
    scale, power, skim = heavy.fit_dwell_map(observed, head, e, skim=1.0)
    assert power == pytest.approx(0.8, abs=0.05)
    assert skim == pytest.approx(0.4, abs=0.15)
    mapped = e * scale * head**power + (1 - e) * skim
    raw = e * head + (1 - e) * 1.0
    assert relative_calibration_error(expected, mapped) < 0.02
    assert relative_calibration_error(expected, raw) > 3 * relative_calibration_error(
        expected, mapped
    )
    assert heavy.fit_dwell_map(observed[:500], head[:500], e[:500], skim=1.0) is None


def test_a_model_saved_without_a_dwell_map_predicts_as_before(tmp_path):
    df = frame(6000)
    model = heavy.train(df, heavy.HeavyParams(epochs=2, batch_size=256))
    assert model.spec.dwell_map is not None  # ~2000 rows on the validation day
    mapped = model.predict(df.tail(200), serving_like=False)["e_dwell"]
    model.spec.dwell_map = None
    model.save(tmp_path / "old")
    old = heavy.HeavyModel.load(tmp_path / "old")
    assert old.spec.dwell_map is None
    plain = old.predict(df.tail(200), serving_like=False)["e_dwell"]
    assert np.all(plain > 0) and not np.allclose(plain, mapped)
