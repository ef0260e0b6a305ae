import pytest

from core.db import connect
from core.schema import apply_schema
from stack import local

pytestmark = pytest.mark.integration


def test_every_component_answers(settings):
    status = local.status(settings)
    assert all(status[c]["healthy"] for c in ("redis", "mlflow", "cassandra")), status


def test_stack_up_again_changes_nothing(settings):
    lines: list[str] = []
    local.up(settings, report=lines.append)
    assert any("up to date" in line for line in lines)
    assert not any("started (pid" in line for line in lines)


def test_schema_is_recorded_and_reapplying_is_a_no_op(settings):
    assert apply_schema(settings) == "up to date"
    cluster, session = connect(settings)
    try:
        versions = [r.version for r in session.execute("SELECT version FROM schema_migrations")]
    finally:
        cluster.shutdown()
    assert 1 in versions
