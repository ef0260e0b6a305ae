import pytest
from mlflow import MlflowClient

pytestmark = pytest.mark.integration


def test_the_ranker_is_registered_as_champion_with_its_metrics(trained, settings):
    client = MlflowClient(settings.mlflow_tracking_uri, settings.mlflow_tracking_uri)
    version = client.get_model_version_by_alias(settings.model_name, "champion")
    assert version.version == trained.version
    run = client.get_run(version.run_id)
    for key in ("ndcg10_model", "ndcg10_chrono", "auc_like"):
        assert key in run.data.metrics
    assert run.data.params["feature_service"] == "feed_ranker_v1"


def test_the_ranker_beats_reverse_chronological_order(trained):
    m = trained.metrics
    assert m["ndcg10_oracle"] == pytest.approx(1.0)
    assert m["ndcg10_model"] > m["ndcg10_chrono"]
    assert 0.5 < m["auc_like"] <= m["auc_like_oracle"] + 0.02


def test_the_model_is_stored_as_lightgbm_text_not_a_pickle(trained, settings, tmp_path):
    import mlflow

    local = mlflow.artifacts.download_artifacts(
        artifact_uri=f"models:/{settings.model_name}/{trained.version}", dst_path=str(tmp_path)
    )
    files = [p.name for p in tmp_path.rglob("*") if p.is_file()]
    assert "model.lgb" in files, (local, files)
    assert not [f for f in files if f.endswith((".pkl", ".pickle"))]
    text = next(tmp_path.rglob("model.lgb")).read_text()
    assert text.startswith("tree")  # LightGBM's text format
