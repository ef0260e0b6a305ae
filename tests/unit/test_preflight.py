"""``feedcast serve start`` on a checkout with no features applied fails in one line that says
what to run, before Ray starts (it used to end in a replica's traceback minutes later)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import Settings
from serving.deploy import NotReadyError, preflight


def test_no_feature_service_names_what_to_run(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path)
    with pytest.raises(NotReadyError, match=r"feed_ranker_v2.*make demo"):
        preflight(s)
    assert not (tmp_path / "world").exists()  # nothing made on the way
