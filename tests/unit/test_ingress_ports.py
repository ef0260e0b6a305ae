"""HAProxy's extra ports against the ports the stack already binds (``stack.ingress``)."""

from __future__ import annotations

import pytest

from core.settings import Settings
from stack import ingress


def test_defaults_do_not_collide() -> None:
    s = Settings()
    ingress.check_ports(s)
    env = ingress.environment(s)
    assert env["RAY_SERVE_HAPROXY_STATS_PORT"] == str(s.serve_port + 1)
    assert env["RAY_SERVE_CONTROL_LOOP_INTERVAL_S"] == f"{s.serve_control_loop_s:g}"


def test_the_node_agent_gathers_stats_at_the_configured_period_in_either_ingress() -> None:
    for ingress_kind in ("haproxy", "python"):
        s = Settings().model_copy(update={"serve_ingress": ingress_kind, "ray_node_stats_s": 45})
        assert ingress.environment(s)["REPORTER_UPDATE_INTERVAL_MS"] == "45000"


def test_a_port_taken_by_the_edge_is_refused_by_name() -> None:
    # The chaos deployment's layout before it set its own: serve 8031, edge 8032, gate 8033.
    s = Settings().model_copy(update={"serve_port": 8031, "edge_port": 8032, "gate_port": 8033})
    with pytest.raises(ValueError, match="port 8032 is both edge_port and HAProxy's stats port"):
        ingress.environment(s)
    ok = s.model_copy(update={"serve_haproxy_ports": (8038, 8039)})
    assert ingress.environment(ok)["RAY_SERVE_HAPROXY_METRICS_PORT"] == "8039"


def test_the_python_proxy_needs_no_extra_ports() -> None:
    s = Settings().model_copy(
        update={"serve_ingress": "python", "serve_port": 8031, "edge_port": 8032}
    )
    assert ingress.environment(s)["RAY_SERVE_ENABLE_HA_PROXY"] == "0"
