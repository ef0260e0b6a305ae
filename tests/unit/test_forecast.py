"""The traffic forecaster: no leakage, sane quantiles, a round trip without pickles, metrics."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from simulator.traffic import TrafficConfig, generate
from training import forecast_metrics as M
from training.forecast import (
    HISTORY,
    WEEK,
    Calibration,
    Forecaster,
    ForecastParams,
    _conformal,
    design,
    seasonal_ewm,
    structural,
    to_frame,
)

FAST = ForecastParams(origin_step=24, num_boost_round=40, quantiles=(0.1, 0.5, 0.9, 0.99))


@pytest.fixture(scope="module")
def series():
    return generate(TrafficConfig(weeks=8, seed=0))


@pytest.fixture(scope="module")
def model(series):
    return Forecaster.fit(series.requests[: 6 * WEEK], series.index, FAST)


def test_features_of_an_origin_ignore_everything_after_it(series):
    y = series.requests.astype(float)
    origin = 5 * WEEK
    spiked = y.copy()
    spiked[origin + 1 :] *= 50  # a planted spike right after the origin
    x, scale, _ = design(y, series.index, np.array([origin]), WEEK)
    xs, ss, _ = design(spiked, series.index, np.array([origin]), WEEK)
    np.testing.assert_array_equal(x.to_numpy(), xs.to_numpy())
    np.testing.assert_array_equal(scale, ss)
    np.testing.assert_array_equal(seasonal_ewm(y)[: origin + 1], seasonal_ewm(spiked)[: origin + 1])


def test_a_spike_after_the_origin_does_not_move_the_forecast(series, model):
    y = series.requests.copy()
    origin = 6 * WEEK - 1
    before = model.predict(y, series.index, origin)
    y[origin + 1 :] *= 50
    after = model.predict(y, series.index, origin)
    np.testing.assert_array_equal(before.to_numpy(), after.to_numpy())


def test_a_spike_after_the_training_cut_does_not_change_the_fit(series, model):
    y = series.requests.copy()
    y[6 * WEEK :] *= 50
    again = Forecaster.fit(y[: 6 * WEEK], series.index, FAST)
    p1 = model.predict(series.requests, series.index, 6 * WEEK - 1)
    p2 = again.predict(series.requests, series.index, 6 * WEEK - 1)
    np.testing.assert_array_equal(p1.to_numpy(), p2.to_numpy())


def test_horizons_past_a_week_are_refused(series):
    with pytest.raises(ValueError, match="horizon"):
        design(series.requests, series.index, np.array([HISTORY]), WEEK + 1)


def test_quantiles_are_ordered_and_the_median_tracks_the_true_rate(series, model):
    origin = 6 * WEEK - 1
    pred = model.predict(series.requests, series.index, origin)
    assert (np.diff(pred.to_numpy(), axis=1) >= 0).all()
    rate = series.request_rate[origin + 1 : origin + 1 + WEEK]
    assert np.mean(np.abs(pred[0.5] - rate)) / rate.mean() < 0.08


def test_save_and_load_give_the_same_forecast(tmp_path, series, model):
    model.save(tmp_path / "fc")
    assert not list((tmp_path / "fc").glob("*.pkl"))
    again = Forecaster.load(tmp_path / "fc")
    a = model.predict(series.requests, series.index, 6 * WEEK - 1)
    b = again.predict(series.requests, series.index, 6 * WEEK - 1)
    np.testing.assert_allclose(a.to_numpy(), b.to_numpy())


def test_metrics_match_hand_computed_values():
    history = np.array([1.0, 2, 3, 5, 2, 4])  # season 3: |5-1|, |2-2|, |4-3| → scale 5/3
    assert M.mase_scale(history, season=3) == pytest.approx(5 / 3)
    assert M.mase([2, 4], [3, 2], 5 / 3) == pytest.approx(1.5 / (5 / 3))
    assert M.smape([100, 0], [50, 0]) == pytest.approx(100 * (100 / 150) / 2)
    # q = 0.9: under-forecast by 2 costs 1.8, over-forecast by 2 costs 0.2.
    assert M.pinball([10, 10], [8, 12], 0.9) == pytest.approx((1.8 + 0.2) / 2)
    assert M.coverage([1, 5, 9], [0, 6, 8], [2, 7, 10]) == pytest.approx(2 / 3)


def test_mase_refuses_a_history_shorter_than_the_season():
    with pytest.raises(ValueError, match="season"):
        M.mase_scale(np.ones(100))


def test_the_serving_frame_forecasts_the_week_after_the_history(series, model):
    history = pd.DataFrame({"ds": series.index[: 6 * WEEK], "y": series.requests[: 6 * WEEK]})
    out = to_frame(model, history)
    assert len(out) == WEEK and out["ds"].dt.tz is None
    assert out["ds"].iloc[0] == series.index[6 * WEEK].tz_convert(None)
    assert list(out.columns) == ["ds", "q0.1", "q0.5", "q0.9", "q0.99"]


def test_factored_profile_keeps_a_product_and_averages_noise_away():
    from training.forecast import factored

    rng = np.random.default_rng(0)
    day = np.array([1.0, 1.0, 1.0, 1.0, 1.1, 1.3, 1.2])
    shape = 1 + 0.8 * np.sin(np.arange(24) / 24 * 2 * np.pi)
    truth = (day[:, None] * shape[None, :]).reshape(1, WEEK)
    np.testing.assert_allclose(factored(truth), truth, rtol=1e-12)
    noisy = truth * (1 + 0.05 * rng.standard_normal((200, WEEK)))
    raw_err = np.abs(noisy - truth).mean()
    fac_err = np.abs(factored(noisy) - truth).mean()
    # each value now rests on 7 + 24 noisy ones: its error about sqrt(1/7 + 1/24) = 0.43 of one
    assert fac_err < raw_err / 2


def test_the_structural_forecast_ignores_a_spike_in_the_last_week_and_the_future():
    long = generate(TrafficConfig(weeks=20, seed=0))
    y = long.requests.astype(float)
    origin = 18 * WEEK - 1
    plain = structural(y, origin, WEEK)
    rate = long.request_rate[origin + 1 : origin + 1 + WEEK]
    assert np.mean(np.abs(plain / rate - 1)) < 0.03  # the world's rate is such a product
    spiked = y.copy()
    spiked[origin - 30 : origin - 22] *= 3.0  # an 8-hour event, two days before the origin
    spiked[origin + 1 :] *= 50  # and the future, which must not count at all
    moved = structural(spiked, origin, WEEK)
    # The spike adds ~8% to the trailing week's total, which an unclipped level would carry
    # into every hour of the next week; clipped, the typical hour moves a third of that.
    week = slice(origin + 1 - WEEK, origin + 1)
    rise = spiked[week].sum() / y[week].sum() - 1
    assert rise > 0.07
    assert np.median(np.abs(moved / plain - 1)) < rise / 3


def test_calibration_blends_the_median_and_widens_around_it():
    pred = pd.DataFrame({0.025: [80.0], 0.1: [90.0], 0.5: [100.0], 0.9: [110.0], 0.975: [120.0]})
    profile = np.array([104.0])
    assert Calibration().apply(pred, profile).equals(pred)  # the default changes nothing
    out = Calibration(trees=0.5, widen80=2.0, widen95=1.5).apply(pred, profile)
    assert out[0.5].item() == pytest.approx(102.0)  # halfway to the profile
    assert out[0.9].item() - out[0.5].item() == pytest.approx(20.0)  # 10 × 2
    assert out[0.5].item() - out[0.025].item() == pytest.approx(30.0)  # 20 × 1.5
    assert Calibration(trees=0.0).apply(pred, profile)[0.5].item() == pytest.approx(104.0)


def test_conformal_factor_restores_the_coverage_of_too_narrow_intervals():
    rng = np.random.default_rng(0)
    actual = rng.normal(100, 10, 5000)
    # Claimed 80% interval at ± 0.5 sd: covers ~38%; needs ~2.56 × to cover 80%.
    flat = np.full(5000, 100.0)
    pred = pd.DataFrame({0.1: flat - 5, 0.5: flat, 0.9: flat + 5})
    c = _conformal(actual, pred, 0.1, 0.9)
    assert c == pytest.approx(1.2816 / 0.5, rel=0.05)
    assert M.coverage(actual, 100 - 5 * c, 100 + 5 * c) == pytest.approx(0.80, abs=0.01)
    wide = pd.DataFrame({0.1: np.full(5000, 50.0), 0.5: pred[0.5], 0.9: np.full(5000, 150.0)})
    assert _conformal(actual, wide, 0.1, 0.9) == 1.0  # already wide enough: never narrowed


def test_the_fit_calibrates_on_held_back_hours_and_the_calibration_round_trips(
    tmp_path, series, model
):
    cal = model.calibration
    assert cal.trees in (0.0, 0.25, 0.5, 0.75, 1.0)
    assert cal.widen80 >= 1.0 and cal.widen95 == 1.0  # FAST has no 0.025 / 0.975 quantiles
    model.save(tmp_path / "m")
    assert Forecaster.load(tmp_path / "m").calibration == cal
    (tmp_path / "m" / "calibration.json").unlink()  # a model saved before calibration
    assert Forecaster.load(tmp_path / "m").calibration == Calibration()
    plain = Forecaster.fit(
        series.requests[: 6 * WEEK], series.index, replace(FAST, calibrate=False)
    )
    assert plain.calibration == Calibration()
