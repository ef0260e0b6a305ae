"""What the alert responder decides from an Alertmanager payload (pure; the HTTP side and Redis
are tested on the real stack in tests/integration/test_monitoring.py)."""

from pipelines.responder import plan


def _alert(name: str, severity: str, status: str = "firing", start: str = "t0") -> dict:
    return {
        "status": status,
        "labels": {"alertname": name, "severity": severity},
        "annotations": {"summary": f"{name} happened"},
        "fingerprint": f"fp-{name}",
        "startsAt": start,
    }


def test_a_firing_page_alert_pages_once_per_incident():
    (a,) = plan({"alerts": [_alert("RedisUnreachable", "page")]})
    assert (a.action, a.alert, a.severity) == ("page", "RedisUnreachable", "page")
    assert a.summary == "RedisUnreachable happened"
    (b,) = plan({"alerts": [_alert("RedisUnreachable", "page", start="t1")]})
    assert a.fingerprint != b.fingerprint  # a new start is a new incident


def test_tickets_resolved_alerts_and_junk_call_for_nothing():
    payload = {
        "alerts": [
            _alert("FeedPagesDegraded", "ticket"),
            _alert("RedisUnreachable", "page", status="resolved"),
            "not an alert",
            {"status": "firing"},  # no labels: no severity
        ]
    }
    assert plan(payload) == []
    assert plan({}) == [] and plan({"alerts": None}) == []
