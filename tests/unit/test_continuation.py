"""The user's continuation rate, from the scrolling counts the prefetch keeps in Redis."""

from __future__ import annotations

import pytest

from core.settings import Settings
from prefetch.pages import continuation, continuation_of


def test_no_history_is_the_prior_and_history_pulls_away_from_it() -> None:
    assert continuation(0, 0, 0, prior=0.8, weight=5) == pytest.approx(0.8)
    # 20 continues, 10 pages started, 5 of them read to the end: 5 stops.
    assert continuation(10, 20, 5, prior=0.8, weight=0) == pytest.approx(20 / 25)
    assert continuation(10, 20, 5, prior=0.8, weight=5) == pytest.approx((20 + 4) / 30)


def test_a_page_read_to_its_end_is_not_a_stop_and_the_rate_stays_below_one() -> None:
    assert continuation(3, 30, 3, prior=0.5, weight=0) == pytest.approx(0.999)
    assert continuation(3, 0, 9, prior=0.5, weight=0) == pytest.approx(0.5)  # no stop, no data


def test_an_hmget_answer_parses_and_an_unread_one_is_the_default() -> None:
    s = Settings()
    default = continuation(0, 0, 0, s.prefetch_p_continue, s.prefetch_continue_prior)
    assert continuation_of(None, s) == pytest.approx(default)
    assert continuation_of([None, None, None], s) == pytest.approx(default)
    got = continuation_of([b"10", b"20", b"5"], s)
    assert got == pytest.approx(
        continuation(10, 20, 5, s.prefetch_p_continue, s.prefetch_continue_prior)
    )
    assert got != pytest.approx(default)
