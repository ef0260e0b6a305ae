"""Bad input on the command line: a clear error naming the problem, exit code 2, no traceback."""

import pytest
from typer.testing import CliRunner

from pipelines.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def empty_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("FEEDCAST_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FEEDCAST_HOME", str(tmp_path / "home"))


def test_world_stats_without_a_world_says_how_to_make_one():
    r = runner.invoke(app, ["world", "stats"])
    assert r.exit_code == 2
    assert "feedcast world generate" in r.output


def test_world_advance_without_a_world_says_how_to_make_one():
    r = runner.invoke(app, ["world", "advance", "--days", "1"])
    assert r.exit_code == 2
    assert "no world under" in r.output and "feedcast world generate" in r.output


def test_materialize_before_apply_says_to_apply_first():
    r = runner.invoke(app, ["features", "materialize"])
    assert r.exit_code == 2
    assert "feedcast features apply" in r.output


def test_eval_with_a_missing_world_config_names_the_file(tmp_path):
    r = runner.invoke(app, ["eval", "--world-config", str(tmp_path / "nope.yaml")])
    assert r.exit_code == 2
    assert "nope.yaml" in r.output


def test_eval_with_an_unknown_world_parameter_names_it(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("userz: 10\n")
    r = runner.invoke(app, ["eval", "--world-config", str(bad)])
    assert r.exit_code == 2
    assert "userz" in r.output


def test_out_of_range_options_are_refused_before_anything_runs():
    r = runner.invoke(app, ["world", "generate", "--users", "5"])
    assert r.exit_code == 2
    assert "--users" in r.output


def test_a_bad_setting_names_the_variable(monkeypatch):
    monkeypatch.setenv("FEEDCAST_CASSANDRA_READ_CONSISTENCY", "MOST")
    r = runner.invoke(app, ["config"])
    assert r.exit_code == 2
    assert "cassandra_read_consistency" in r.output


def test_eval_without_a_tracking_server_says_to_start_the_stack(monkeypatch):
    monkeypatch.setenv("FEEDCAST_MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens
    r = runner.invoke(app, ["eval", "--users", "50", "--days", "3"])
    assert r.exit_code == 2
    assert "feedcast stack up" in r.output


def test_upload_of_a_missing_file_names_it(tmp_path):
    r = runner.invoke(app, ["upload", str(tmp_path / "nope.jpg"), "--author", "1"])
    assert r.exit_code == 2
    assert "nope.jpg" in r.output


def test_upload_without_the_service_says_to_start_it(tmp_path, monkeypatch):
    monkeypatch.setenv("FEEDCAST_SERVE_PORT", "9")  # nothing listens
    photo = tmp_path / "p.jpg"
    photo.write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 64)
    r = runner.invoke(app, ["upload", str(photo), "--author", "1", "--wait", "0"])
    assert r.exit_code == 2
    assert "feedcast serve start" in r.output
