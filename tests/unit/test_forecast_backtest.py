"""The backtest on a tiny series, and its command line."""

import json

from typer.testing import CliRunner

from pipelines.cli import app
from training.forecast import ForecastParams
from training.forecast_backtest import backtest, origins_for

TINY = ForecastParams(origin_step=48, num_boost_round=20)
runner = CliRunner()


def test_origins_walk_through_the_weekdays_and_end_with_the_series():
    origins = origins_for(26 * 168, 8)
    assert origins[-1] + 168 == 26 * 168
    assert len({(o // 24) % 7 for o in origins}) == 7


def test_backtest_on_a_tiny_series_writes_the_issue_keys():
    out, folds = backtest(
        ["stationary", "growth"], folds=2, weeks=11, params=TINY, arima_folds=0, progress=False
    )
    for key in (
        "mase_ours_stationary",
        "mase_snaive_stationary",
        "mase_ours_growth",
        "mase_snaive_growth",
        "mase_best_statsforecast",
        "coverage95",
    ):
        assert isinstance(out[key], float), key
    assert out["season"] == 168 and out["folds"] == 2
    # The true rate is the floor: it beats the weekly naive by about 1 - 1/√2.
    assert out["mase_floor_stationary"] < 0.85 * out["mase_snaive_stationary"]
    assert set(out["results"]["growth"]) == {"h24", "h168"}
    assert {f.method for f in folds} >= {"ours", "snaive24", "snaive168", "floor", "MSTL"}
    json.dumps(out)


def test_forecast_help_lists_backtest():
    r = runner.invoke(app, ["forecast", "--help"])
    assert r.exit_code == 0 and "backtest" in r.output


def test_an_unknown_variant_is_refused_naming_the_option(tmp_path):
    r = runner.invoke(
        app, ["forecast", "backtest", "--json", str(tmp_path / "o.json"), "--variants", "weird"]
    )
    assert r.exit_code == 2
    assert "--variants" in r.output and "weird" in r.output


def test_too_many_folds_for_the_series_are_refused_naming_the_option(tmp_path):
    r = runner.invoke(app, ["forecast", "backtest", "--weeks", "10", "--folds", "8"])
    assert r.exit_code == 2
    assert "--folds" in r.output
