"""Waiting on a condition instead of sleeping: the tests' one polling helper."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A condition did not hold before its deadline (an assertion failure of the test)."""


def wait_until(
    predicate: Callable[[], T],
    *,
    timeout: float,
    interval: float = 0.2,
    what: str,
) -> T:
    """Call ``predicate`` every ``interval`` seconds until it returns something truthy; return it.

    Raises :class:`WaitTimeout` naming ``what`` (the awaited condition, e.g. "the page cached in
    Redis"), the timeout and the last value seen when ``timeout`` seconds pass first. The
    predicate is always tried once more at the deadline, so a slow last poll is not lost.
    """
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"waited {timeout:g} s for {what}; last seen: {got!r:.300}")
        time.sleep(min(interval, max(deadline - time.monotonic(), 0.0)))
