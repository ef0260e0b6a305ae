"""schemathesis against the running service's own OpenAPI document, as a user would run it:
``st run --checks all`` over every route (examples, coverage, fuzzing and stateful phases,
positive and negative data). Every check must hold: no server error, every status and body as
documented, valid data accepted, invalid data rejected, the API key enforced.

What the document cannot say is configured in ``schemathesis.toml`` (the cursor's 400 for
random strings) and ``st_hooks.py`` (times drawn from the past), each with its reason."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.integration.suite import FUZZ_KEY, TEST_RATE_PER_S

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.slow]
HERE = Path(__file__).resolve().parent
ROUTES = {
    "GET /v1/feed/{user_id}",
    "POST /v1/events",
    "POST /v1/posts",
    "POST /v1/uploads",
    "GET /v1/uploads/{post_id}",
}


def test_schemathesis_checks_all_over_every_route_finds_nothing(service, tmp_path):
    events = tmp_path / "events.ndjson"
    st = Path(sys.executable).with_name("st")
    cmd = [
        str(st),
        "--config-file",
        str(HERE / "schemathesis.toml"),
        "run",
        f"{service}/openapi.json",
        "--checks",
        "all",
        "--header",
        f"X-API-Key: {FUZZ_KEY}",
        # Paced under the key's own rate limit, so that a 429 is never what a check sees.
        "--rate-limit",
        f"{int(0.9 * TEST_RATE_PER_S)}/s",
        "--workers",
        "1",
        "--max-examples",
        "60",
        "--seed",
        "20261206",
        "--generation-deterministic",
        "--report",
        "ndjson",
        "--report-ndjson-path",
        str(events),
        "--no-color",
    ]
    root = str(HERE.parent.parent)  # where the hooks module imports from
    env = os.environ | {
        "SCHEMATHESIS_HOOKS": "tests.integration.st_hooks",
        "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p),
    }
    # Run from the test's own folder: st keeps a cache of past failures (.schemathesis/) in its
    # working directory and replays them, which must neither land in the repository nor make
    # one run depend on another.
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-8000:]

    # What was exercised: every /v1 route, with requests that were served and refused.
    statuses: Counter[int] = Counter()
    routes: set[str] = set()
    for line in events.read_text().splitlines():
        for code, label in _responses(json.loads(line)):
            statuses[code] += 1
            routes.add(label)
    assert routes >= ROUTES, routes
    assert sum(statuses.values()) >= 500, statuses
    assert statuses[200] + statuses[202] > 0, statuses  # valid requests were served ...
    assert statuses[422] > 0 and statuses[400] > 0, statuses  # ... and invalid ones refused
    assert statuses[429] == 0, statuses  # the pacing kept every case inside the rate limit


def _responses(node: object, label: str = ""):
    """(status code, operation label) of every response recorded in an NDJSON event."""
    if isinstance(node, dict):
        label = str(node.get("label") or label)
        response = node.get("response")
        if isinstance(response, dict) and isinstance(response.get("status_code"), int):
            yield response["status_code"], label
        for v in node.values():
            yield from _responses(v, label)
    elif isinstance(node, list):
        for v in node:
            yield from _responses(v, label)
