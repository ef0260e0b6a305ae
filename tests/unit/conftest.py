"""The unit tier runs with nothing started: a connection to a stack port fails the test
(tests/offline.py); tests that need a service live in tests/integration."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.offline import Guard, refusing_stack_connections


@pytest.fixture(autouse=True)
def _refuse_stack_connections(request: pytest.FixtureRequest) -> Iterator[Guard]:
    with refusing_stack_connections(request.node.nodeid) as guard:
        yield guard


@pytest.fixture(autouse=True)
def _environment_restored() -> Iterator[None]:
    """A unit test leaves os.environ as it found it. The CLI's callback exports the stack's Ray
    token settings (``stack.ray_head.auth_env``); leaked into a later Ray start in the same
    process (an integration test, in random order), its GCS would demand a token that the
    already-imported ray client does not send (CI's failure: ``InvalidAuthToken``)."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
