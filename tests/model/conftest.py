"""The model tier: behavioural tests of rankers trained on a tiny world, with no service.

Like tests/unit, every test here fails on a connection to a stack port (tests/offline.py); the
session fixture that trains the rankers runs under the same guard.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.model.tiny import Tiny, build
from tests.offline import Guard, refusing_stack_connections


@pytest.fixture(autouse=True)
def _refuse_stack_connections(request: pytest.FixtureRequest) -> Iterator[Guard]:
    with refusing_stack_connections(request.node.nodeid) as guard:
        yield guard


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    with refusing_stack_connections("tests/model: the tiny world and its rankers"):
        return build(tmp_path_factory.mktemp("tiny"))
