"""Anomaly detectors and their per-event score (capacity/anomaly.py)."""

from __future__ import annotations

import itertools

import numpy as np

from capacity import anomaly
from capacity.anomaly import Event


def test_sustained_needs_consecutive_minutes():
    out = np.array([1, 1, 0, 1, 1, 1, 0], bool)
    assert anomaly.sustained(out, 3).tolist() == [0, 0, 0, 0, 0, 1, 0]
    assert anomaly.sustained(out, 1).tolist() == out.tolist()


def test_the_band_catches_a_spike_and_a_drop_and_stays_quiet_otherwise():
    rng = np.random.default_rng(0)
    rate = np.full(3000, 100.0)
    live = rate.copy()
    live[1000:1030] *= 2.0  # spike
    live[2000:2060] *= 0.5  # drop
    observed = rng.poisson(live).astype(float)
    alerts = anomaly.band(observed, rate * 0.9, rate * 1.1, window=5, z=3.0, min_minutes=2)
    events = [Event(1000, 1030, "spike", 2.0), Event(2000, 2060, "drop", 0.5)]
    s = anomaly.score(alerts, events)
    assert s["recall"] == 1.0 and s["precision"] == 1.0 and s["false_alerts"] == 0
    assert s["median_delay_min"] <= 3


def test_score_counts_events_false_alerts_and_delays():
    alerts = np.zeros(200, bool)
    alerts[12:15] = True  # 2 min into the first event
    alerts[98:100] = True  # within the grace after the second (ended at 95)
    alerts[150:152] = True  # nothing: a false alert
    events = [Event(10, 40, "spike", 2), Event(80, 95, "drop", 0.5), Event(170, 180, "shift", 1.3)]
    s = anomaly.score(alerts, events, grace=5)
    assert (s["detected"], s["alerts"], s["false_alerts"]) == (2, 3, 1)
    assert s["recall"] == 2 / 3 and s["precision"] == 2 / 3
    assert s["median_delay_min"] == (2 + 18) / 2


def test_injected_events_are_apart_and_of_every_kind():
    rate = np.full(7 * 24 * 60, 50.0)
    out, events = anomaly.inject(rate, 9, np.random.default_rng(1))
    assert {e.kind for e in events} == set(anomaly.KINDS)
    for a, b in itertools.pairwise(events):
        assert b.start >= a.end
    for e in events:
        assert 10 <= e.end - e.start <= 120
        assert np.allclose(out[e.start : e.end], 50.0 * e.factor)
