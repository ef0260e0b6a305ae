import io
import json
import logging
import secrets

import pytest

from serving.metrics import (
    STAGES,
    JsonFormatter,
    Metrics,
    json_logging,
    request_context,
    scrape_targets,
)


def test_every_stage_is_accepted_and_an_unknown_one_refused():
    m = Metrics()
    for stage in STAGES:
        m.observe_stage(stage, 0.01)
    with pytest.raises(ValueError, match="unknown stage"):
        m.observe_stage("ranking", 0.01)


def test_timed_records_the_block_even_when_it_raises(monkeypatch):
    m = Metrics()
    seen: list[tuple[str, float]] = []
    monkeypatch.setattr(m, "observe_stage", lambda stage, s: seen.append((stage, s)))
    with pytest.raises(RuntimeError), m.timed("features"):
        raise RuntimeError("store down")
    assert len(seen) == 1
    assert seen[0][0] == "features"
    assert 0 <= seen[0][1] < 1


def test_status_takes_http_codes_only():
    m = Metrics()
    m.status(200)
    m.status(429)
    for bad in (0, 42, 600):
        with pytest.raises(ValueError, match="status code"):
            m.status(bad)


def test_a_new_model_version_drops_the_previous_one_to_zero(monkeypatch):
    m = Metrics()
    sets: list[tuple[float, str]] = []
    monkeypatch.setattr(m._model, "set", lambda v, tags: sets.append((v, tags["model_version"])))
    m.model_version("v1")
    m.model_version("v1")
    m.model_version("v2")
    assert sets == [(1, "v1"), (0, "v1"), (1, "v2")]


def test_scrape_targets_list_live_nodes_that_export():
    nodes = [
        {"Alive": True, "NodeManagerAddress": "10.0.0.2", "MetricsExportPort": 8080},
        {"Alive": False, "NodeManagerAddress": "10.0.0.3", "MetricsExportPort": 8080},
        {"Alive": True, "NodeManagerAddress": "10.0.0.1", "MetricsExportPort": 8080},
        {"Alive": True, "NodeManagerAddress": "10.0.0.4", "MetricsExportPort": -1},
    ]
    assert scrape_targets(nodes) == ["10.0.0.1:8080", "10.0.0.2:8080"]


def _format(logger: logging.Logger, emit) -> dict:
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    try:
        emit()
    finally:
        logger.removeHandler(handler)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 1
    return json.loads(lines[0])


def test_json_log_lines_carry_the_request_id_of_the_context_and_extras():
    log = logging.getLogger("feedcast.test.json")
    log.setLevel(logging.INFO)
    with request_context("r-123"):
        out = _format(log, lambda: log.info("served %d items", 20, extra={"user_id": 7}))
    assert out["message"] == "served 20 items"
    assert out["request_id"] == "r-123"
    assert out["user_id"] == 7
    assert out["level"] == "INFO"
    assert out["logger"] == "feedcast.test.json"
    assert out["ts"].endswith("+00:00")
    outside = _format(log, lambda: log.info("idle"))
    assert outside["request_id"] is None


def test_json_log_lines_take_an_explicit_request_id_and_the_exception():
    log = logging.getLogger("feedcast.test.json")

    def boom():
        try:
            raise KeyError("post 9")
        except KeyError:
            log.exception("failed", extra={"request_id": "r-9"})

    with request_context("ignored"):
        out = _format(log, boom)
    assert out["request_id"] == "r-9"
    assert "KeyError: 'post 9'" in out["exc"]


def test_json_logging_adds_its_handler_once_and_stops_propagation():
    name = f"feedcast.test.setup.{secrets.token_hex(4)}"
    log = json_logging(name)
    json_logging(name)
    assert sum(isinstance(h.formatter, JsonFormatter) for h in log.handlers) == 1
    assert log.propagate is False


def test_a_bucket_quantile_is_that_of_the_window_between_two_scrapes():
    from serving.metrics import bucket_quantile

    inf = float("inf")
    before = {0.01: 100.0, 0.1: 100.0, 1.0: 100.0, inf: 100.0}  # 100 fast requests earlier
    after = {0.01: 100.0, 0.1: 150.0, 1.0: 200.0, inf: 200.0}  # then 50 to 0.1 s, 50 to 1 s
    assert bucket_quantile(before, after, 0.5) == pytest.approx(0.1)
    assert bucket_quantile(before, after, 0.99) == pytest.approx(0.1 + 0.9 * 49 / 50)
    assert bucket_quantile({}, after, 0.25) == pytest.approx(0.005)  # half-way into the first
    assert bucket_quantile(after, after, 0.99) != bucket_quantile(after, after, 0.99)  # NaN: empty
    slow = {0.01: 0.0, inf: 10.0}
    assert bucket_quantile({}, slow, 0.99) == 0.01  # past the last bound: its lower bound
