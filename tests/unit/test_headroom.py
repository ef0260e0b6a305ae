"""An upload worker's look at the machine's idle CPU (``serving/headroom.py``), on a scripted
``/proc/stat`` and clock."""

from pathlib import Path

import pytest

from serving.headroom import STEP_S, Headroom, read_cpu


class Machine:
    """Two CPUs whose idle share the test sets; ticks advance with the clock (100 a second)."""

    def __init__(self, idle_share: float = 1.0) -> None:
        self.t, self.idle, self.total, self.idle_share = 0.0, 0.0, 0.0, idle_share

    def advance(self, seconds: float) -> None:
        ticks = 2 * 100 * seconds
        self.t += seconds
        self.total += ticks
        self.idle += ticks * self.idle_share

    def read(self) -> tuple[float, float, int]:
        return self.idle, self.total, 2


def _headroom(m: Machine) -> Headroom:
    return Headroom(read=m.read, clock=lambda: m.t, window_s=1.0)


def test_idle_cores_is_the_idle_share_of_the_window_times_the_cpus():
    m = Machine(idle_share=0.25)
    h = _headroom(m)
    assert h.idle_cores() is None  # nothing to compare with yet
    m.advance(0.5)
    assert h.idle_cores() == pytest.approx(0.5)
    m.idle_share = 1.0
    for _ in range(10):  # a second later only the idle second is in the window
        m.advance(0.2)
        h.idle_cores()
    assert h.idle_cores() == pytest.approx(2.0, abs=0.01)


def test_a_look_after_a_quiet_spell_measures_afresh():
    m = Machine(idle_share=0.0)
    h = _headroom(m)
    h.idle_cores()
    m.advance(60.0)  # a minute busy, then no look: that minute must not decide the next job
    m.idle_share = 1.0
    assert h.idle_cores() is None
    m.advance(0.2)
    assert h.idle_cores() == pytest.approx(2.0)


def test_wait_returns_at_once_with_room_and_waits_while_the_machine_is_busy():
    m = Machine(idle_share=0.9)
    h = _headroom(m)
    assert h.wait(0.5, 10.0, sleep=m.advance) == pytest.approx(STEP_S)  # the first look's step
    assert h.wait(0.5, 10.0, sleep=m.advance) == 0.0

    m.idle_share = 0.1  # 0.2 cores idle: below 0.5, so it waits until the cap
    m.advance(2.0)
    assert h.wait(0.5, 3.0, sleep=m.advance) == pytest.approx(3.0)


def test_wait_ends_when_the_machine_frees_up():
    m = Machine(idle_share=0.1)
    h = _headroom(m)
    h.idle_cores()
    m.advance(1.0)

    def sleep(s: float) -> None:
        m.advance(s)
        if m.t >= 2.0:
            m.idle_share = 1.0  # the feed's burst is over

    waited = h.wait(0.5, 30.0, sleep=sleep)
    assert 1.0 <= waited <= 2.0  # within a window of the change, far from the cap


@pytest.mark.parametrize("min_idle, max_wait", [(0.0, 10.0), (0.5, 0.0)])
def test_wait_is_off_when_either_setting_is_zero(min_idle, max_wait):
    m = Machine(idle_share=0.0)
    h = _headroom(m)
    assert h.wait(min_idle, max_wait, sleep=m.advance) == 0.0


def test_an_unreadable_proc_stat_never_waits(tmp_path: Path):
    assert read_cpu(tmp_path / "missing") is None
    (tmp_path / "stat").write_text("intr 1 2 3\n")
    assert read_cpu(tmp_path / "stat") is None
    h = Headroom(read=lambda: None)
    assert h.wait(1.5, 10.0, sleep=lambda s: None) == 0.0


def test_read_cpu_counts_idle_and_iowait_and_the_cpus(tmp_path: Path):
    stat = tmp_path / "stat"
    stat.write_text(
        "cpu  100 5 50 800 20 1 2 3 7 0\ncpu0 50 2 25 400 10 0 1 1 0 0\n"
        "cpu1 50 3 25 400 10 1 1 2 0 0\nintr 5\n"
    )
    assert read_cpu(stat) == (820.0, 981.0, 2)
