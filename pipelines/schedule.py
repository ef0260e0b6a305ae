"""When the retraining pipeline runs: a cron expression and an APScheduler with a job store on disk.

The scheduler keeps its job in SQLite (``{home}/pipeline/jobs.sqlite``): the job is stored by
its textual reference (``pipelines.retrain:scheduled_run``), never as a pickled function, and
its next fire time outlives a restart, so a run missed while the process was down still starts
when it comes back within :data:`MISFIRE_GRACE_S`. The store is per node; what keeps two nodes
(or two schedulers) from retraining at once is the run's Redis lock (:mod:`pipelines.lock`),
the only shared state.

Cron expressions are crontab's, in UTC: ``minute hour day month weekday`` with weekday 0 or 7
= Sunday (APScheduler 3 counts from Monday; it is translated here), or six fields with seconds
first (``*/2 * * * * *``: every two seconds, for tests).
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger

from core.settings import Settings
from pipelines.lock import LockHeld

log = logging.getLogger(__name__)

JOB_ID = "retrain"
DEFAULT_JOB = "pipelines.retrain:scheduled_run"
# A run due while the scheduler was down (or busy) still starts if it is at most this late.
MISFIRE_GRACE_S = 3600

_FIELDS = ("minute", "hour", "day", "month", "day_of_week")
_CRON_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]  # crontab numbering: 0 = Sunday
_DOW_ITEM = re.compile(r"(?P<range>\*|[a-z]+|\d+)(?:-(?P<last>[a-z]+|\d+))?(?:/(?P<step>\d+))?")


def parse_cron(expr: str) -> CronTrigger:
    """A UTC trigger from a crontab expression (5 fields) or one with seconds first (6 fields).

    Raises:
        ValueError: naming the expression and what is wrong with it.
    """
    values = expr.split()
    if len(values) not in (5, 6):
        raise ValueError(
            f"cron expression {expr!r}: {len(values)} fields; expected 5 (minute hour day month "
            "weekday) or 6 (second minute hour day month weekday)"
        )
    names = ("second", *_FIELDS) if len(values) == 6 else _FIELDS
    fields = dict(zip(names, values, strict=True))
    try:
        if fields["day"] != "*" and fields["day_of_week"] != "*":
            raise ValueError(
                "restricts both day of month and weekday (crontab runs on either, this "
                "scheduler only on both); restrict one of them"
            )
        fields["day_of_week"] = _weekdays(fields["day_of_week"])
        return CronTrigger(**fields, timezone=UTC)
    except ValueError as exc:
        raise ValueError(f"cron expression {expr!r}: {exc}") from exc


def _weekdays(field: str) -> str:
    """Crontab's weekday field (0/7 = Sunday, names, ranges, steps) as APScheduler 3's names."""
    if field == "*":
        return field
    days: set[int] = set()
    for item in field.lower().split(","):
        m = _DOW_ITEM.fullmatch(item)
        if m is None:
            raise ValueError(f"weekday {item!r} is not a day (0-7, sun-sat), range or step")
        if m["range"] == "*":
            if m["last"]:
                raise ValueError(f"weekday {item!r}: '*' cannot start a range")
            first, last = 0, 6
        else:
            first = _day(m["range"])
            last = _day(m["last"], end=True) if m["last"] else first
        step = int(m["step"] or 1)
        if last < first or step < 1:
            raise ValueError(f"weekday {item!r}: empty range (Sunday is 0 or 7)")
        if m["step"] and not m["last"] and m["range"] != "*":
            last = 6  # "1/2": from Monday, every other day, as crontab does
        days.update(d % 7 for d in range(first, last + 1, step))
    return "*" if len(days) == 7 else ",".join(_CRON_DAYS[d] for d in sorted(days))


def _day(token: str, *, end: bool = False) -> int:
    if token.isdigit():
        if not 0 <= int(token) <= 7:
            raise ValueError(f"weekday {token} is out of 0-7")
        return int(token)
    if token not in _CRON_DAYS:
        raise ValueError(f"weekday {token!r} is not a day name (sun-sat)")
    day = _CRON_DAYS.index(token)
    return 7 if end and day == 0 else day  # "fri-sun" ends on Sunday, the 7th


def next_fire_times(expr: str, n: int = 3, *, after: datetime | None = None) -> list[datetime]:
    """The next ``n`` times (UTC) ``expr`` fires after ``after`` (default: now)."""
    trigger = parse_cron(expr)
    out: list[datetime] = []
    prev: datetime | None = None
    now = after or datetime.now(UTC)
    while len(out) < n:
        t = trigger.get_next_fire_time(prev, now)
        if t is None:
            break
        out.append(t)
        prev, now = t, t + timedelta(microseconds=1)
    return out


def default_store_url(settings: Settings) -> str:
    """SQLite under the home folder (created here, when a scheduler is built)."""
    folder = settings.home / "pipeline"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'jobs.sqlite'}"


def build_scheduler(
    settings: Settings,
    *,
    job: str = DEFAULT_JOB,
    cron: str | None = None,
    blocking: bool = True,
    store_url: str | None = None,
) -> BaseScheduler:
    """An APScheduler that runs ``job`` (``module:function``) on ``cron``, not started yet.

    ``cron`` defaults to ``settings.retrain_cron``; the job store to :func:`default_store_url`.
    One run at a time (``max_instances=1``), runs missed while busy or down collapse into one
    (``coalesce``). A stored job with the same function and schedule keeps its next fire time,
    so a restart does not skip a run that came due while the scheduler was down. A run that
    raises (another run holds the lock, validation stopped it) is logged and the scheduler goes
    on. Call ``start()``: a blocking scheduler returns when interrupted, a background one at
    once (stop it with ``shutdown()``).
    """
    trigger = parse_cron(cron or settings.retrain_cron)
    store = SQLAlchemyJobStore(url=store_url or default_store_url(settings))
    kind = BlockingScheduler if blocking else BackgroundScheduler
    sched = kind(jobstores={"default": store}, timezone=UTC)
    store.start(sched, "default")  # creates the table; the scheduler's start() repeats it
    stored = store.lookup_job(JOB_ID)
    same = (
        stored is not None
        and stored.func_ref == job
        and str(stored.trigger) == str(trigger)
        and stored.next_run_time is not None
    )
    sched.add_job(
        job,
        trigger,
        id=JOB_ID,
        name=f"retrain ({cron or settings.retrain_cron})",
        replace_existing=True,
        max_instances=1,
        coalesce=True,
        misfire_grace_time=MISFIRE_GRACE_S,
        **({"next_run_time": stored.next_run_time} if same and stored else {}),
    )
    sched.add_listener(_report, EVENT_JOB_ERROR | EVENT_JOB_MISSED)
    return sched


def _report(event: JobExecutionEvent) -> None:
    if event.code == EVENT_JOB_MISSED:
        log.warning("run of %s due at %s was missed", event.job_id, event.scheduled_run_time)
        return
    exc = event.exception
    level = logging.WARNING if isinstance(exc, LockHeld) else logging.ERROR
    log.log(
        level,
        "run of %s due at %s did not complete; the schedule goes on: %s: %s",
        event.job_id,
        event.scheduled_run_time,
        type(exc).__name__,
        exc,
    )
