"""Both rankers through Ray Train on the session's Ray, beside the running feed app.

The training set is the session world's, built as training builds it and saved as parquet;
each Ray-trained model is judged on the holdout against the in-process one.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from core import constants as C

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HEAVY = {"epochs": 8}  # fewer than the session's 30: the comparison, not the model, is tested


@pytest.fixture(scope="module")
def data(settings, trained, service, tmp_path_factory):
    """(train parquet, split, storage) with the feed app deployed on the same Ray."""
    from ray import serve

    from serving.deploy import APP_NAME
    from training.dataset import time_split, training_frame

    assert serve.status().applications[APP_NAME].status == "RUNNING"
    split = time_split(training_frame(settings), holdout_days=1.0)
    root = tmp_path_factory.mktemp("ray_train")
    split.train.to_parquet(root / "train.parquet")
    return root / "train.parquet", split, root / "runs"


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def light_ndcg(booster, holdout) -> float:
    from training.evaluate import mean_ndcg
    from training.light import features_matrix

    scored = holdout.assign(score=booster.predict(features_matrix(holdout)))
    return mean_ndcg(scored, "score", C.LABEL)


@pytest.fixture(scope="module")
def light_in_process(data):
    from training import light

    _, split, _ = data
    booster, seconds = timed(light.train, split.train, light.LightParams())
    print(f"\nlight in-process: {seconds:.1f}s")
    return booster


@pytest.fixture(scope="module")
def heavy_in_process(data):
    from training import heavy

    _, split, _ = data
    model, seconds = timed(heavy.train, split.train, heavy.HeavyParams(**HEAVY))
    print(f"\nheavy in-process: {seconds:.1f}s")
    return model


def test_one_lightgbm_worker_fits_what_light_train_fits(data, light_in_process):
    from training import light
    from training.distributed import train_light_ray

    path, split, storage = data
    booster, seconds = timed(
        train_light_ray, path, light.LightParams(), address=None, workers=1, storage=storage
    )
    print(f"\nlight through LightGBMTrainer, 1 worker: {seconds:.1f}s")
    x = light.features_matrix(split.holdout)
    np.testing.assert_allclose(booster.predict(x), light_in_process.predict(x), atol=1e-9)
    assert light_ndcg(booster, split.holdout) == pytest.approx(
        light_ndcg(light_in_process, split.holdout), abs=1e-9
    )


def test_two_lightgbm_workers_rank_the_holdout_about_as_well(data, light_in_process):
    from training import light
    from training.distributed import train_light_ray

    path, split, storage = data
    booster, seconds = timed(
        train_light_ray, path, light.LightParams(), address=None, workers=2, storage=storage
    )
    print(f"\nlight through LightGBMTrainer, 2 workers: {seconds:.1f}s")
    got, want = light_ndcg(booster, split.holdout), light_ndcg(light_in_process, split.holdout)
    print(f"NDCG@10 of the label: 2 workers {got:.4f}, in-process {want:.4f}")
    assert booster.num_trees() == light.LightParams().num_boost_round
    assert got == pytest.approx(want, abs=0.02)


def _heavy_checks(model, reference, holdout, tolerance: float) -> None:
    from training.evaluate import auc
    from training.heavy import HEADS

    got = model.predict(holdout, serving_like=False)
    assert set(got) == set(HEADS)
    assert all(v.shape == (len(holdout),) for v in got.values())
    assert all(np.all((v >= 0) & (v <= 1)) for h, v in got.items() if h != "e_dwell")
    assert np.all(got["e_dwell"] > 0)
    assert model.spec.users == reference.spec.users
    np.testing.assert_allclose(model.spec.mean, reference.spec.mean)
    want = reference.predict(holdout, serving_like=False)
    got_auc, want_auc = auc(holdout[C.LIKE], got["p_like"]), auc(holdout[C.LIKE], want["p_like"])
    print(f"AUC(like) on the holdout: Ray {got_auc:.4f}, in-process {want_auc:.4f}")
    assert got_auc == pytest.approx(want_auc, abs=tolerance)


def heavy_ray(data, workers: int):
    from training import heavy
    from training.distributed import train_heavy_ray

    path, _, storage = data
    params = heavy.HeavyParams(**HEAVY)
    model, seconds = timed(
        train_heavy_ray, path, params, address=None, workers=workers, storage=storage
    )
    print(f"\nheavy through TorchTrainer, {workers} worker(s): {seconds:.1f}s")
    return model


def test_one_torch_worker_trains_and_calibrates_like_heavy_train(data, heavy_in_process):
    _, split, storage = data
    model = heavy_ray(data, workers=1)
    _heavy_checks(model, heavy_in_process, split.holdout, tolerance=0.01)
    # The same calibration fit (per head and slot, on the same validation days).
    np.testing.assert_allclose(model.spec.calibration, heavy_in_process.spec.calibration, rtol=0.05)
    # The checkpoint is HeavyModel.save's folder: weights and spec, no pickles.
    files = {p.name for p in storage.rglob("*") if p.is_file() and "heavy" in str(p)}
    assert {"weights.pt", "spec.json"} <= files
    assert not [f for f in files if f.endswith((".pkl", ".pickle"))]


def test_two_torch_workers_train_one_model_under_ddp(data, heavy_in_process):
    model = heavy_ray(data, workers=2)
    _heavy_checks(model, heavy_in_process, data[1].holdout, tolerance=0.03)


def test_a_failed_run_names_the_trainer_and_the_cause(data, settings):
    import httpx

    from training import heavy
    from training.distributed import DistributedTrainingError, train_heavy_ray

    _, _, storage = data
    with pytest.raises(DistributedTrainingError, match=r"TorchTrainer.*FileNotFoundError"):
        train_heavy_ray(
            Path("/nonexistent/train.parquet"),
            heavy.HeavyParams(epochs=1),
            address=None,
            workers=1,
            storage=storage,
        )
    # The feed app beside the runs still answers.
    assert httpx.get(f"{settings.serve_url}/healthz", timeout=5).status_code == 200
