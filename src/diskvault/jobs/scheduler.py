"""Periodic work, registered in one place, run once per tick across all workers.

Every process that runs jobs also runs this scheduler thread. Before running
a task for tick N, it inserts (task, N) into ``scheduler_ticks``; the primary
key lets exactly one process win, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from diskvault.config import Settings
from diskvault.db.engine import session_scope
from diskvault.jobs.models import SchedulerTick

log = structlog.get_logger("diskvault.scheduler")

PeriodicFn = Callable[[Settings], None]


@dataclass(frozen=True)
class Periodic:
    name: str
    interval_s: Callable[[Settings], float]
    fn: PeriodicFn
    per_node: bool = False  # True: every node runs it (e.g. local cleanup), no lock


PERIODIC: dict[str, Periodic] = {}


def periodic(
    name: str, interval_s: float | Callable[[Settings], float], *, per_node: bool = False
) -> Callable[[PeriodicFn], PeriodicFn]:
    def register(fn: PeriodicFn) -> PeriodicFn:
        interval = interval_s if callable(interval_s) else (lambda _s, v=interval_s: v)
        PERIODIC[name] = Periodic(name, interval, fn, per_node)
        return fn

    return register


def claim_tick(settings: Settings, name: str, tick: int) -> bool:
    try:
        with session_scope(settings.DATABASE_URL) as s:
            s.add(SchedulerTick(name=name, tick=tick, node=settings.NODE))
        return True
    except IntegrityError:
        return False


class Scheduler:
    def __init__(self, settings: Settings, resolution_s: float = 0.5) -> None:
        self.settings = settings
        self.resolution = resolution_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="dv-scheduler")
        self._last: dict[str, int] = {}

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def run_due(self, now: float | None = None) -> list[str]:
        """Run every task whose tick changed; returns the names this node ran."""
        now = time.time() if now is None else now
        ran = []
        for task in list(PERIODIC.values()):
            interval = max(0.1, task.interval_s(self.settings))
            tick = int(now // interval)
            if self._last.get(task.name) == tick:
                continue
            self._last[task.name] = tick
            if not task.per_node and not claim_tick(self.settings, task.name, tick):
                continue
            try:
                task.fn(self.settings)
                ran.append(task.name)
            except Exception:
                log.exception("periodic task failed", task=task.name)
        return ran

    def _loop(self) -> None:
        while not self._stop.wait(self.resolution):
            self.run_due()


@periodic("scheduler-ticks-prune", 3600)
def prune_ticks(settings: Settings) -> None:
    cutoff = datetime.now(UTC) - timedelta(days=1)
    with session_scope(settings.DATABASE_URL) as s:
        s.execute(delete(SchedulerTick).where(SchedulerTick.at < cutoff))


@periodic("jobs-reaper", lambda s: s.JOB_REAPER_INTERVAL_S)
def reaper(settings: Settings) -> None:
    from diskvault.jobs.service import reap

    reap(settings)
