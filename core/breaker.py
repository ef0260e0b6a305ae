"""A circuit breaker for one dependency of one process (a replica's view of its own connections).

Closed: calls go through. A failure opens it for ``cool_s``: calls are skipped and the caller
takes its degraded path at once instead of paying the dependency's timeout. After the cool-down
it is half-open: exactly one call (the probe) goes through while every other caller still
skips; the probe's success closes it, its failure opens it again. Without the single probe, a
hung dependency (a SIGSTOPped Redis accepts connections and never answers) costs a timeout to
every request that arrives while the first probe is still waiting.

Nothing here is shared between processes on purpose: each replica learns about its own
connections, and a cluster of replicas needs no coordination for it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class Breaker:
    def __init__(self, cool_s: float = 1.0, *, clock: Callable[[], float] = time.monotonic) -> None:
        if cool_s <= 0:
            raise ValueError("cool_s must be > 0")
        self.cool_s = cool_s
        self._clock = clock
        self._lock = threading.Lock()
        self._open_until = 0.0  # 0: closed
        self._probing = False
        self.skipped = 0  # calls not made since this breaker was built (for metrics and tests)

    def closed(self) -> bool:
        """No failure is outstanding (a probe in flight or a cool-down counts as not closed)."""
        with self._lock:
            return self._open_until == 0.0

    def acquire(self) -> bool:
        """May the caller call the dependency now? A True must be followed by :meth:`success`
        or :meth:`failure`."""
        with self._lock:
            if self._open_until == 0.0:
                return True
            if not self._probing and self._clock() >= self._open_until:
                self._probing = True
                return True
            self.skipped += 1
            return False

    def success(self) -> None:
        with self._lock:
            self._open_until, self._probing = 0.0, False

    def failure(self) -> None:
        with self._lock:
            self._open_until, self._probing = self._clock() + self.cool_s, False

    def trip(self) -> None:
        """Open it now (a failure seen outside :meth:`call`)."""
        self.failure()

    def call(
        self, fn: Callable[[], T], default: T, on_error: Callable[[Exception], None] | None = None
    ) -> tuple[T, bool]:
        """``fn()`` when allowed; (value, answered). Errors open the breaker and give
        ``default``; ``on_error`` sees them (to log)."""
        if not self.acquire():
            return default, False
        try:
            value = fn()
        except Exception as exc:
            self.failure()
            if on_error is not None:
                on_error(exc)
            return default, False
        self.success()
        return value, True
