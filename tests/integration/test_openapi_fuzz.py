"""schemathesis against the running service's own OpenAPI document: whatever a caller sends,
valid or not, the answer is never a server error, and a 200 matches the documented schema."""

import time
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.integration.suite import FUZZ_KEY, TEST_RATE_PER_S

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.slow]

# Per /v1 route: requests that fit the schema, and requests that break it somewhere.
EXAMPLES = {GenerationMode.POSITIVE: 200, GenerationMode.NEGATIVE: 150}
MIN_GAP_S = 1.0 / (0.9 * TEST_RATE_PER_S)  # paced under the key's rate limit


def _fuzz(operation, mode, n: int, called: Counter, statuses: Counter, last: list) -> None:
    """``n`` generated requests to one operation, paced under the rate limit."""
    route = f"{operation.method.upper()} {operation.path}"

    @given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis_settings(
        max_examples=n,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def call(case):
        wait = last[0] + MIN_GAP_S - time.monotonic()
        if wait > 0:  # pacing, not waiting for a condition: the gap the rate limit allows
            time.sleep(wait)
        last[0] = time.monotonic()
        response = case.call_and_validate(
            headers={"X-API-Key": FUZZ_KEY},
            checks=[not_a_server_error, response_schema_conformance],
            timeout=30,
        )
        called[route] += 1
        statuses[response.status_code] += 1

    call()


def test_over_a_thousand_generated_requests_get_no_server_error(service):
    schema = schemathesis.openapi.from_url(f"{service}/openapi.json")
    called: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    last = [0.0]
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path.startswith("/v1/"):
            for mode, n in EXAMPLES.items():
                _fuzz(operation, mode, n, called, statuses, last)

    assert set(called) == {"GET /v1/feed/{user_id}", "POST /v1/events", "POST /v1/posts"}
    assert sum(called.values()) >= 1000, called
    assert statuses[422] > 0, statuses  # the negative cases reached validation ...
    assert statuses[200] + statuses[202] > 0, statuses  # ... and some valid ones were served
    assert statuses[429] == 0, statuses  # the pacing kept every case inside the rate limit
