"""The traffic forecaster: no leakage, sane quantiles, a round trip without pickles, metrics."""

import numpy as np
import pandas as pd
import pytest

from simulator.traffic import TrafficConfig, generate
from training import forecast_metrics as M
from training.forecast import (
    HISTORY,
    WEEK,
    Forecaster,
    ForecastParams,
    design,
    seasonal_ewm,
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
