"""Notebooks run top to bottom on tiny worlds, with their parameters injected.

Here, beside the stack fixtures they use (MLflow for 02's run and every experiment's clean-up),
so that `pytest tests` starts the stack once for them and the integration tests alike."""

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
pytestmark = [pytest.mark.notebook, pytest.mark.integration, pytest.mark.slow]


def run_notebook(path: Path, **params: object) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    injected = "\n".join(f"{k} = {v!r}" for k, v in params.items())
    cell.source += "\n# injected by the test\n" + injected
    client = NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent.parent)}},
    )
    client.execute()
    return nb


@pytest.fixture()
def run(tmp_path, run_id, settings):
    """Run a notebook with a unique experiment; delete the experiment afterwards."""
    from mlflow import MlflowClient

    used: list[str] = []

    def _run(name: str, **params: object) -> dict:
        out = tmp_path / f"{name}.json"
        experiment = f"feedcast-nb-test-{run_id}-{name[:2]}"
        used.append(experiment)
        run_notebook(NOTEBOOKS / name, data_dir=str(tmp_path / name), experiment=experiment,
                     feast_project=f"nb_{run_id}", metrics_out=str(out), **params)  # fmt: skip
        return json.loads(out.read_text()) | {"experiment": experiment}

    yield _run
    client = MlflowClient(settings.mlflow_tracking_uri)
    for name in used:
        exp = client.get_experiment_by_name(name)
        if exp is not None and exp.lifecycle_stage == "active":
            client.delete_experiment(exp.experiment_id)


def test_explore_world_reports_realism_figures(run):
    stats = run("01_explore_world.ipynb", users=600, days=3, seed=2)
    assert 0.5 < stats["request_zipf_exponent"] < 1.5
    assert stats["like_rate_top_over_tenth"] > 1.3  # position bias is visible


def test_train_and_compare_beats_the_baselines_and_logs(run, settings):
    from mlflow import MlflowClient

    m = run("02_train_and_compare.ipynb", users=300, days=5, seed=2, epochs=30)
    assert m["ndcg10_heavy"] > m["ndcg10_chrono"]
    assert m["ndcg10_light"] > m["ndcg10_chrono"]
    assert m["auc_like"] > 0.6
    client = MlflowClient(settings.mlflow_tracking_uri)
    exp = client.get_experiment_by_name(m["experiment"])
    runs = client.search_runs([exp.experiment_id])
    assert runs[0].data.metrics["ndcg10_heavy"] == pytest.approx(m["ndcg10_heavy"])


def test_off_policy_notebook_estimates_a_value(run):
    m = run("03_evaluate_off_policy.ipynb", users=300, days=5, seed=3, epochs=30)
    assert m["snips_estimate"] > 0 and m["true_value"] > 0
    # A tiny world: a loose sanity bar (the default world is judged in bench).
    assert m["snips_rel_error"] < 0.5
