"""The circuit breaker's states, on a clock the test moves."""

import threading

import pytest

from core.breaker import Breaker


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def boom() -> int:
    raise ConnectionError("down")


def test_closed_breaker_calls_through_and_a_failure_opens_it():
    clock = Clock()
    b = Breaker(1.0, clock=clock)
    assert b.call(lambda: 7, 0) == (7, True)
    assert b.call(boom, -1) == (-1, False)
    assert not b.closed()
    calls = []
    assert b.call(lambda: calls.append(1) or 1, 0) == (0, False)  # skipped while open
    assert calls == [] and b.skipped == 1


def test_after_the_cool_down_one_probe_goes_through_and_others_still_skip():
    clock = Clock()
    b = Breaker(1.0, clock=clock)
    b.trip()
    clock.t += 0.99
    assert not b.acquire()
    clock.t += 0.02
    assert b.acquire()  # the probe
    assert not b.acquire()  # a second caller while the probe is in flight
    assert not b.acquire()
    b.success()
    assert b.closed() and b.acquire() and b.acquire()


def test_a_failed_probe_opens_it_for_another_cool_down():
    clock = Clock()
    b = Breaker(2.0, clock=clock)
    b.trip()
    clock.t += 2.0
    assert b.call(boom, None) == (None, False)
    clock.t += 1.9
    assert not b.acquire()
    clock.t += 0.1
    assert b.call(lambda: "up", None) == ("up", True)
    assert b.closed()


def test_errors_reach_the_callback_and_never_the_caller():
    seen: list[Exception] = []
    b = Breaker(1.0)
    assert b.call(boom, 0, seen.append) == (0, False)
    assert len(seen) == 1 and isinstance(seen[0], ConnectionError)


def test_only_one_of_many_threads_probes():
    clock = Clock()
    b = Breaker(1.0, clock=clock)
    b.trip()
    clock.t += 5
    release, got = threading.Event(), []

    def probe() -> None:
        release.wait(5)
        return None

    def caller() -> None:
        got.append(b.call(probe, "skipped")[1])

    threads = [threading.Thread(target=caller) for _ in range(16)]
    for t in threads:
        t.start()
    while b.skipped < 15:  # every other caller has been turned away
        threading.Event().wait(0.01)
    release.set()
    for t in threads:
        t.join()
    assert got.count(True) == 1 and got.count(False) == 15


def test_cool_down_must_be_positive():
    with pytest.raises(ValueError, match="cool_s"):
        Breaker(0)


def test_a_lazy_connection_fails_fast_while_cassandra_is_unreachable() -> None:
    """core.db.Lazy against a port nothing listens on: the first get tries and fails, the next
    ones within the breaker's cool-down fail at once without trying, and nothing is built."""
    import socket

    from core.breaker import Breaker
    from core.db import Lazy
    from core.settings import Settings

    with socket.socket() as sock:  # a free port, closed again: connections are refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    built: list[object] = []
    now = [0.0]
    lazy = Lazy(
        Settings(cassandra_port=port),
        lambda c, s: built.append(s),
        Breaker(5.0, clock=lambda: now[0]),
    )
    with pytest.raises(Exception) as first:
        lazy.get()
    assert not isinstance(first.value, ConnectionError) or "retrying" not in str(first.value)
    with pytest.raises(ConnectionError, match="Cassandra unreachable"):
        lazy.get()  # within the cool-down: no connection tried
    assert built == []
