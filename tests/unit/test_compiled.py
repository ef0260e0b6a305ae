"""The compiled light ranker gives LightGBM's scores, is built once per model text, and is not
used where it cannot be built."""

import lightgbm as lgb
import numpy as np
import pytest

from serving.compiled import PARITY_TOL, compile_light, model_sha256, parity_gap


@pytest.fixture(scope="module")
def booster() -> lgb.Booster:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, 12))
    x[rng.random(x.shape) < 0.05] = np.nan  # missing values take the learned default branch
    y = (np.nan_to_num(x[:, 0]) + 0.5 * np.nan_to_num(x[:, 3]) ** 2 > 0.7).astype(int)
    params = {"objective": "binary", "num_leaves": 15, "verbose": -1, "seed": 1}
    return lgb.train(params, lgb.Dataset(x, y), num_boost_round=60)


def test_the_compiled_forest_scores_as_lightgbm_does(booster, tmp_path):
    compiled = compile_light(booster, tmp_path)
    assert compiled is not None
    assert parity_gap(booster, compiled) <= PARITY_TOL
    x = np.random.default_rng(7).normal(size=(470, 12))
    x[::5, 2] = np.nan
    np.testing.assert_allclose(compiled(x), booster.predict(x), rtol=0, atol=PARITY_TOL)


def test_the_library_is_built_once_per_model_text(booster, tmp_path):
    first = compile_light(booster, tmp_path)
    assert first is not None and first.library.name == f"light-{model_sha256(booster)}.so"
    built = first.library.stat().st_mtime_ns
    again = compile_light(booster, tmp_path)
    assert again is not None and again.library.stat().st_mtime_ns == built
    assert [p.name for p in tmp_path.iterdir()] == [first.library.name]  # no leftovers


def test_without_a_compiler_lightgbm_predict_stays(booster, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no gcc on it
    assert compile_light(booster, tmp_path) is None
    assert not list(tmp_path.iterdir())
