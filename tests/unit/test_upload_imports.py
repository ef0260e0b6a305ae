"""The upload tier's replicas do not load the ranking path: every upload worker the autoscaler
starts imports its module on a node the feed shares, and torch, Feast and LightGBM made that
~8 s of CPU more per start."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "feast", "lightgbm", "mlflow")


def test_the_upload_app_imports_nothing_of_the_ranking_path() -> None:
    code = (
        f"import sys, serving.upload_app; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == ""


def test_the_feed_app_still_does() -> None:  # the check above can see a heavy import at all
    code = "import sys, serving.app; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "True"
