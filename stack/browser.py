"""Headless Chromium (Debian's), to check a page as a browser draws it: the demo's contact
sheet (``pipelines/contact_sheet.py``) says in ``#status`` how many of its photos loaded."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from stack import proc

_STATUS = re.compile(r'id="status"[^>]*data-loaded="(\d+)"[^>]*data-total="(\d+)"')


def find() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def ensure_installed() -> str:
    return proc.apt_install(find, "chromium", "Chromium (headless)")


def loaded(page: Path, timeout_s: float = 60) -> tuple[int, int]:
    """(photos loaded, photos) of a contact sheet opened in headless Chromium; the page's own
    script counts them once its load event fired (every image done or failed)."""
    binary = ensure_installed()
    done = subprocess.run(
        [
            binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-dev-shm-usage", "--virtual-time-budget=20000", "--dump-dom",
            page.resolve().as_uri(),
        ],
        capture_output=True, text=True, timeout=timeout_s, check=False,
    )  # fmt: skip
    m = _STATUS.search(done.stdout)
    if m is None:
        raise proc.StackError(
            f"Chromium drew no status for {page} (exit {done.returncode}): "
            f"{done.stderr.strip()[-500:]}"
        )
    return int(m[1]), int(m[2])
