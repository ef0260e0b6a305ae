"""The retraining pipeline as series for Prometheus, read from its run folders (each run's
``state.json`` under ``settings.pipeline_dir/runs``; :mod:`pipelines.retrain` writes them). The
alert responder serves them on its ``/metrics``, so they are there whether or not a retrain runs.

- ``feedcast_retrain_last_ok_timestamp_seconds``: when the newest run that ended ``promoted`` or
  ``nothing-new`` ended (absent before the first).
- ``feedcast_retrain_last_promoted_timestamp_seconds``: when the newest promotion ended.
- ``feedcast_retrain_last_stopped``: 1 when the newest run that ended, ended ``stopped`` (a step
  refused its input), else 0.
- ``feedcast_retrain_gate_passed``: the newest gate's verdict, 1 promote or 0 refuse.
- ``feedcast_retrain_runs{status}``: runs by status (``running`` includes a run that failed and
  waits to be resumed).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

OK = ("promoted", "nothing-new")


def _ts(value: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        return None


def read_runs(pipeline_dir: Path) -> list[dict[str, Any]]:
    """Every run's state, oldest first (run ids start with their UTC start time); a state that
    cannot be read is skipped (a run being written, a stray folder)."""
    runs = []
    for f in sorted((pipeline_dir / "runs").glob("*/state.json")):
        try:
            state = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(state, dict):
            runs.append(state)
    return runs


def figures(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """What the series say, from the runs' states (oldest first)."""
    ended = [r for r in runs if r.get("ended") and _ts(r["ended"]) is not None]
    ok = [r for r in ended if r.get("status") in OK]
    promoted = [r for r in ended if r.get("status") == "promoted"]
    gated = [r for r in runs if "gate" in (r.get("steps") or {})]
    out: dict[str, Any] = {
        "runs": dict(Counter(str(r.get("status", "unknown")) for r in runs)),
        "last_ok": _ts(ok[-1]["ended"]) if ok else None,
        "last_promoted": _ts(promoted[-1]["ended"]) if promoted else None,
        "last_stopped": (1.0 if ended[-1].get("status") == "stopped" else 0.0) if ended else None,
        "gate_passed": None,
    }
    if gated:
        promote = ((gated[-1]["steps"]["gate"] or {}).get("out") or {}).get("promote")
        out["gate_passed"] = None if promote is None else float(bool(promote))
    return out


class PipelineCollector(Collector):
    def __init__(self, pipeline_dir: Path) -> None:
        self.pipeline_dir = pipeline_dir

    def collect(self) -> Iterator[GaugeMetricFamily]:
        f = figures(read_runs(self.pipeline_dir))
        runs = GaugeMetricFamily(
            "feedcast_retrain_runs", "Retraining runs by status", labels=["status"]
        )
        for status, n in sorted(f["runs"].items()):
            runs.add_metric([status], n)
        yield runs
        for key, name, what in (
            ("last_ok", "feedcast_retrain_last_ok_timestamp_seconds",
             "When the newest retrain that ended promoted or nothing-new ended"),
            ("last_promoted", "feedcast_retrain_last_promoted_timestamp_seconds",
             "When the newest promotion ended"),
            ("last_stopped", "feedcast_retrain_last_stopped",
             "1 when the newest retrain that ended was stopped by a step"),
            ("gate_passed", "feedcast_retrain_gate_passed",
             "The newest gate's verdict: 1 promote, 0 refuse"),
        ):  # fmt: skip
            if f[key] is not None:
                yield GaugeMetricFamily(name, what, value=f[key])
