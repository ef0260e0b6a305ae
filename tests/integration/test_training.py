import pytest
from mlflow import MlflowClient

pytestmark = pytest.mark.integration


def test_both_rankers_are_registered_as_champion_with_their_metrics(trained, settings):
    client = MlflowClient(settings.mlflow_tracking_uri, settings.mlflow_tracking_uri)
    light = client.get_model_version_by_alias(settings.model_name, "champion")
    heavy = client.get_model_version_by_alias(settings.heavy_model_name, "champion")
    assert (light.version, heavy.version) == (trained.light.version, trained.heavy.version)
    run = client.get_run(trained.run_id)
    for key in (
        "ndcg10_heavy",
        "ndcg10_chrono",
        "auc_like",
        "auc_like_bayes",
        "ece_p_like",
        "rel_ece_p_like",
        "ece_e_dwell",
        "ece_e_dwell_slot0",
        "snips_estimate",
        "true_value",
    ):
        assert key in run.data.metrics
    assert run.data.params["feature_service"] == "feed_ranker_v2"
    artifacts = {a.path for a in client.list_artifacts(trained.run_id, "report")}
    assert {"report/ndcg.png", "report/calibration.png", "report/snips.png"} <= artifacts


def test_the_rankers_beat_reverse_chronological_order_even_on_a_tiny_world(trained):
    m = trained.metrics
    assert m["ndcg10_oracle"] == pytest.approx(1.0)
    assert m["ndcg10_heavy"] > m["ndcg10_chrono"]
    assert m["ndcg10_light"] > m["ndcg10_chrono"]
    assert 0.5 < m["auc_like"] <= m["auc_like_bayes"] + 0.02
    assert m["ece_p_like"] < 0.05


def test_models_are_stored_without_pickles(trained, settings, tmp_path):
    import mlflow

    for name, version, must in (
        (settings.model_name, trained.light.version, "model.lgb"),
        (settings.heavy_model_name, trained.heavy.version, "weights.pt"),
    ):
        dst = tmp_path / name
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{version}", dst_path=str(dst)
        )
        files = [p.name for p in dst.rglob("*") if p.is_file()]
        assert must in files, files
        assert not [f for f in files if f.endswith((".pkl", ".pickle"))], files
    text = next((tmp_path / settings.model_name).rglob("model.lgb")).read_text()
    assert text.startswith("tree")  # LightGBM's text format


def test_the_heavy_ranker_loads_back_and_scores_like_the_trained_one(trained, settings):
    import numpy as np
    import pandas as pd

    from serving.model import load_alias
    from training.dataset import training_frame

    rankers = load_alias(settings)
    rows = pd.read_parquet(settings.world_dir / "impressions.parquet").tail(200)
    frame = training_frame(settings, rows)
    got = rankers.heavy.predict(frame)
    assert set(got) == {"p_like", "p_comment", "p_save", "e_dwell"}
    assert all(np.all((v >= 0) & (v <= 1)) for k, v in got.items() if k != "e_dwell")
    assert np.all(got["e_dwell"] > 0)
