"""Notebooks run top to bottom on a tiny world, with their parameters injected."""

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
pytestmark = [pytest.mark.notebook, pytest.mark.integration]


def run_notebook(path: Path, **params: object) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source += "\n# injected by the test\n" + "\n".join(f"{k} = {v!r}" for k, v in params.items())
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={
        "metadata": {"path": str(path.parent.parent)}}).execute()
    return nb


def test_train_ranker_notebook_learns_and_logs(tmp_path, run_id, settings):
    from mlflow import MlflowClient

    out = tmp_path / "metrics.json"
    experiment = f"feedcast-nb-test-{run_id}"
    try:
        run_notebook(NOTEBOOKS / "train_ranker.ipynb", users=300, days=4, seed=2, rounds=60,
                     data_dir=str(tmp_path / "data"), feast_project=f"nb_{run_id}",
                     experiment=experiment, metrics_out=str(out))
        metrics = json.loads(out.read_text())
        assert metrics["ndcg10_model"] > metrics["ndcg10_chrono"]
        client = MlflowClient(settings.mlflow_tracking_uri)
        exp = client.get_experiment_by_name(experiment)
        runs = client.search_runs([exp.experiment_id])
        assert runs[0].data.metrics["ndcg10_model"] == pytest.approx(metrics["ndcg10_model"])
    finally:
        client = MlflowClient(settings.mlflow_tracking_uri)
        exp = client.get_experiment_by_name(experiment)
        if exp is not None:
            client.delete_experiment(exp.experiment_id)


def test_notebooks_are_committed_without_outputs():
    for path in NOTEBOOKS.glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), path
