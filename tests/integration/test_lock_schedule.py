"""The retraining run's Redis lock and its scheduler, against a real Redis and a real
APScheduler with a SQLite job store. Only Redis: the module starts one of its own (the stack's
script, on a free port) and stops it afterwards, so it needs no session stack and no other
test to have started one."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from apscheduler.job import Job
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler

from core import cache
from core.settings import REPO_ROOT, Settings
from pipelines.lock import LockHeld, LockLost, LockUnavailable, RunLock, holder, lock_key
from pipelines.schedule import build_scheduler, parse_cron
from tests.integration.suite import free_ports
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

TICKS_ENV = "FEEDCAST_TEST_TICKS_FILE"
DEADLINE_S = 15.0


def tick() -> None:
    """The scheduled test job (stored by reference): one line per run."""
    with open(os.environ[TICKS_ENV], "a") as f:
        f.write(f"{time.time()}\n")


def tick_then_fail() -> None:
    """A scheduled job that fails the way a run refused by the lock does."""
    tick()
    raise LockHeld("a retrain run is already going: run test on host x pid 1", {})


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A Redis of this module's own, on a free port, stopped at the end of the module."""
    from stack import redis as stack_redis

    (port,) = free_ports(1)
    s = Settings(redis_port=port, home=tmp_path_factory.mktemp("redis"))
    assert stack_redis.up(s).startswith("started"), f"something already answers on {port}"
    yield s
    stack_redis.down(s)


@pytest.fixture
def settings(own_redis: Settings, tmp_path: Path) -> Iterator[Settings]:
    """That Redis, with a home (job store) and a lock namespace of this test's own."""
    s = Settings(
        redis_port=own_redis.redis_port,
        home=tmp_path,
        feast_project=f"locktest_{uuid.uuid4().hex}",
    )
    r = cache.client(s)
    try:
        r.ping()
    except redis.RedisError as exc:
        pytest.fail(f"the module's Redis at {s.redis_url} does not answer: {exc}")
    yield s
    r.delete(lock_key(s, "retrain"))
    r.close()


@pytest.fixture
def rds(settings: Settings) -> Iterator[redis.Redis]:
    r = cache.client(settings)
    yield r
    r.close()


# --- the lock ---------------------------------------------------------------------------------


def test_second_acquire_is_refused_naming_the_holder(settings: Settings) -> None:
    with RunLock(settings, owner={"run_id": "20260101-ab12"}, ttl_s=30):
        with pytest.raises(LockHeld) as err:
            RunLock(settings, owner={"run_id": "other"}).acquire()
        message = str(err.value)
        assert "a retrain run is already going: run 20260101-ab12" in message
        assert f"pid {os.getpid()}" in message
        assert "UTC" in message and "lock expires in" in message
        assert err.value.holder["run_id"] == "20260101-ab12"
        info = holder(settings)
        assert info is not None
        assert info["pid"] == os.getpid() and "token" not in info
        assert 0 < info["expires_in_s"] <= 30


def test_release_lets_the_next_run_in(settings: Settings) -> None:
    with RunLock(settings, owner={"run_id": "first"}) as first:
        pass
    assert holder(settings) is None
    with pytest.raises(LockLost, match="not held"):
        first.check()
    with RunLock(settings, owner={"run_id": "second"}):
        assert (holder(settings) or {})["run_id"] == "second"


def test_locks_of_other_names_and_deployments_are_independent(settings: Settings) -> None:
    other = settings.model_copy(update={"feast_project": settings.feast_project + "_b"})
    with RunLock(settings), RunLock(settings, "backfill"), RunLock(other):
        assert holder(settings) and holder(settings, "backfill") and holder(other)


def test_release_never_deletes_another_holders_lock(settings: Settings, rds: redis.Redis) -> None:
    first = RunLock(settings, owner={"run_id": "first"}, ttl_s=30).acquire()
    rds.delete(lock_key(settings, "retrain"))  # as if it had expired
    with RunLock(settings, owner={"run_id": "second"}):
        first.release()
        assert (holder(settings) or {})["run_id"] == "second"
        with pytest.raises(LockHeld, match="run second"):
            RunLock(settings).acquire()


def test_lock_lost_when_the_key_is_deleted_under_a_live_run(
    settings: Settings, rds: redis.Redis
) -> None:
    with RunLock(settings, ttl_s=30) as lock:
        lock.check()  # still ours: no error
        rds.delete(lock_key(settings, "retrain"))
        with pytest.raises(LockLost, match="expired or was deleted"):
            lock.check()
        assert lock.lost


def test_lock_lost_when_taken_by_another_run_is_noticed_by_the_renewal(
    settings: Settings, rds: redis.Redis
) -> None:
    with RunLock(settings, ttl_s=1.5) as lock:
        rds.delete(lock_key(settings, "retrain"))
        with RunLock(settings, owner={"run_id": "usurper"}, ttl_s=30):
            # The renewal thread, not check(), finds out (every ttl/3).
            wait_until(
                lambda: lock.lost,
                timeout=DEADLINE_S,
                interval=0.1,
                what="the renewal thread to find the lock taken",
            )
            with pytest.raises(LockLost, match="usurper"):
                lock.check()
        # Leaving the lost lock's block deleted nothing: the usurper released its own.
    assert holder(settings) is None


def test_renewal_keeps_the_lock_past_its_ttl(settings: Settings) -> None:
    with RunLock(settings, owner={"run_id": "long"}, ttl_s=1.0) as lock:
        time.sleep(3.5)  # on purpose: three and a half TTLs pass, and the renewals keep it
        lock.check()
        with pytest.raises(LockHeld, match="run long"):
            RunLock(settings).acquire()
    assert holder(settings) is None


def test_a_killed_holder_frees_the_lock_after_its_ttl(settings: Settings) -> None:
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from core.settings import Settings\n"
            "from pipelines.lock import RunLock\n"
            "RunLock(Settings(), owner={'run_id': 'doomed'}, ttl_s=2.0).acquire()\n"
            "print('held', flush=True)\n"
            "time.sleep(600)\n",  # holds the lock until the test kills it
        ],
        cwd=REPO_ROOT,
        env={
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "FEEDCAST_REDIS_PORT": str(settings.redis_port),
            "FEEDCAST_FEAST_PROJECT": settings.feast_project,
            "FEEDCAST_HOME": str(settings.home),
        },
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "held"
        time.sleep(3)  # on purpose: longer than its TTL, and the child's renewals keep it
        assert (holder(settings) or {}).get("pid") == child.pid
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)

    def take() -> bool:
        try:
            RunLock(settings, owner={"run_id": "heir"}).acquire().release()
        except LockHeld:
            return False
        return True

    wait_until(take, timeout=DEADLINE_S, interval=0.1, what="the dead holder's lock to expire")


def test_redis_down_at_acquire_names_the_url(tmp_path: Path) -> None:
    (port,) = free_ports(1)  # nothing listens there
    s = Settings(redis_port=port, home=tmp_path, feast_project="locktest_down")
    with pytest.raises(LockUnavailable, match=f"Redis at redis://127.0.0.1:{port}/0"):
        RunLock(s).acquire()
    with pytest.raises(LockUnavailable, match=f"127.0.0.1:{port}"):
        holder(s)


def test_lock_lost_when_redis_is_down_past_the_ttl(tmp_path: Path) -> None:
    """A private Redis (the stack's own script, on a free port) is stopped under a live run."""
    from stack import redis as stack_redis

    (port,) = free_ports(1)
    s = Settings(redis_port=port, home=tmp_path, feast_project="locktest_outage")
    stack_redis.up(s)
    try:
        lock = RunLock(s, owner={"run_id": "stranded"}, ttl_s=1.5).acquire()
        lock.check()
        stack_redis.down(s)
        wait_until(
            lambda: lock.lost,
            timeout=DEADLINE_S,
            interval=0.1,
            what="a lock unconfirmed for its whole TTL to count as lost",
        )
        with pytest.raises(LockLost, match=f"could not be renewed .*127.0.0.1:{port}"):
            lock.check()
        lock.release()  # Redis still down: a warning, no error (the key expires by itself)
    finally:
        stack_redis.down(s)


# --- the scheduler ----------------------------------------------------------------------------


def ticks(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_scheduler_fires_a_six_field_cron_job_repeatedly(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "ticks.txt"
    monkeypatch.setenv(TICKS_ENV, str(out))
    sched = build_scheduler(settings, job=f"{__name__}:tick", cron="*/2 * * * * *", blocking=False)
    sched.start()
    try:
        wait_until(lambda: ticks(out) >= 2, timeout=DEADLINE_S, what="two scheduled runs")
    finally:
        sched.shutdown(wait=True)
    assert (settings.home / "pipeline" / "jobs.sqlite").exists()


def test_a_failing_run_is_logged_and_the_schedule_goes_on(
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    out = tmp_path / "ticks.txt"
    monkeypatch.setenv(TICKS_ENV, str(out))
    caplog.set_level(logging.WARNING, logger="pipelines.schedule")
    sched = build_scheduler(
        settings, job=f"{__name__}:tick_then_fail", cron="*/2 * * * * *", blocking=False
    )
    sched.start()
    try:
        wait_until(lambda: ticks(out) >= 2, timeout=DEADLINE_S, what="two scheduled runs")
        assert sched.running and sched.get_job("retrain") is not None
    finally:
        sched.shutdown(wait=True)
    failures = [r for r in caplog.records if r.name == "pipelines.schedule"]
    assert failures, "the failed runs were not logged"
    assert "schedule goes on: LockHeld: a retrain run is already going" in failures[0].getMessage()
    assert failures[0].levelno == logging.WARNING  # another run holding the lock is no error


def stored_job(settings: Settings) -> Job | None:
    """The retrain job as the SQLite file holds it, read without running a scheduler."""
    store = SQLAlchemyJobStore(url=f"sqlite:///{settings.home / 'pipeline' / 'jobs.sqlite'}")
    store.start(BackgroundScheduler(), "default")
    try:
        return store.lookup_job("retrain")
    finally:
        store.shutdown()


def test_the_job_store_survives_a_restart(settings: Settings) -> None:
    job = f"{__name__}:tick"
    first = build_scheduler(settings, job=job, cron="*/2 * * * * *", blocking=False)
    first.start(paused=True)
    first.shutdown()

    # Another process on the same file (nothing added by it) finds the job, by reference.
    found = stored_job(settings)
    assert found is not None and found.next_run_time is not None
    assert found.func_ref == job
    assert str(found.trigger) == str(parse_cron("*/2 * * * * *"))
    assert (found.max_instances, found.coalesce) == (1, True)
    due = found.next_run_time
    wait_until(
        lambda: time.time() > due.timestamp() + 0.5, timeout=5, what="the job's due time to pass"
    )

    # Rebuilt with the same job and schedule, it keeps the due time that passed while it was
    # down (so the missed run still starts); with another schedule, it starts afresh.
    again = build_scheduler(settings, job=job, cron="*/2 * * * * *", blocking=False)
    again.start(paused=True)
    try:
        kept = again.get_job("retrain")
        assert kept is not None and kept.next_run_time == due
    finally:
        again.shutdown()
    other = build_scheduler(settings, job=job, cron="0 3 * * *", blocking=False)
    other.start(paused=True)
    try:
        moved = other.get_job("retrain")
        assert moved is not None and moved.next_run_time > due
        assert (moved.next_run_time.hour, moved.next_run_time.minute) == (3, 0)
        assert len(other.get_jobs()) == 1
    finally:
        other.shutdown()


def test_an_invalid_cron_expression_is_refused_before_anything_is_stored(
    settings: Settings,
) -> None:
    with pytest.raises(ValueError, match="cron expression '0 3 \\* \\*': 4 fields"):
        build_scheduler(settings, cron="0 3 * *", blocking=False)
    with pytest.raises(ValueError, match="'61 \\* \\* \\* \\*'"):
        build_scheduler(settings, cron="61 * * * *", blocking=False)
    assert not (settings.home / "pipeline" / "jobs.sqlite").exists()
