"""The unit tier runs with nothing started: a connection to a stack port fails the test
(tests/offline.py); tests that need a service live in tests/integration."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.offline import Guard, refusing_stack_connections


@pytest.fixture(autouse=True)
def _refuse_stack_connections(request: pytest.FixtureRequest) -> Iterator[Guard]:
    with refusing_stack_connections(request.node.nodeid) as guard:
        yield guard
