"""What a running task sees: params, progress, cancellation, cleanup, heartbeat."""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import update

from diskvault.config import Settings
from diskvault.db.engine import session_scope
from diskvault.jobs.models import Job
from diskvault.tools.process import Cancelled

PROGRESS_INTERVAL_S = 0.25  # at most ~4 progress writes per second per job
MAX_SAMPLES = 120  # points of the throughput chart stored with a job


class JobContext:
    def __init__(self, settings: Settings, job_id: str, params: dict[str, Any], attempt: int):
        self.settings = settings
        self.job_id = job_id
        self.params = params
        self.attempt = attempt
        self._cancel = threading.Event()
        self.interrupted = False  # set by a clean stop of the process, not by a user
        self._stop = threading.Event()
        self._cleanups: list[Path] = []
        self._last_write = 0.0
        self._rate: float | None = None
        self._last_sample: tuple[float, int] | None = None
        self._samples: list[list[float]] = []  # [seconds since the first, bytes/s]
        self._t0: float | None = None
        self._pending: tuple[int | None, int | None, float | None, str | None] | None = None
        self._progress_lock = threading.RLock()
        self._floor_percent = 0.0
        self._floor_done = 0
        self._bytes_base = 0  # bytes of the phases before the current one
        self._phase_done: int | None = None
        self._parts: dict[str, list[Any]] = {}
        self._heartbeat = threading.Thread(target=self._beat, daemon=True, name=f"hb-{job_id}")

    # -- lifecycle (runner) -------------------------------------------------
    def start_heartbeat(self) -> None:
        self._heartbeat.start()

    def stop_heartbeat(self) -> None:
        self._stop.set()
        if self._heartbeat.is_alive():
            self._heartbeat.join(timeout=5)

    def _beat(self) -> None:
        # Also the cancel poll: one small read-and-write per interval per job.
        interval = min(self.settings.JOB_HEARTBEAT_S, 0.5)
        beats_per_write = max(1, round(self.settings.JOB_HEARTBEAT_S / interval))
        n = 0
        while not self._stop.wait(interval):
            n += 1
            try:
                with session_scope(self.settings.DATABASE_URL) as s:
                    job = s.get(Job, self.job_id)
                    if job is not None and job.cancel_requested:
                        self._cancel.set()
                    if n % beats_per_write == 0:
                        s.execute(
                            update(Job)
                            .where(Job.id == self.job_id)
                            .values(heartbeat_at=datetime.now(UTC))
                        )
            except Exception:  # noqa: S112 - a missed beat is retried next interval
                continue

    # -- cancellation -------------------------------------------------------
    def interrupt(self) -> None:
        """The process is stopping: end the job like a cancel, so it can be requeued."""
        self.interrupted = True
        self._cancel.set()

    def should_cancel(self) -> bool:
        return self._cancel.is_set()

    def check_cancel(self) -> None:
        if self._cancel.is_set():
            raise Cancelled()

    def sleep(self, seconds: float) -> None:
        """Sleep, waking at once (with Cancelled) if the job is cancelled."""
        if self._cancel.wait(seconds):
            raise Cancelled()

    # -- cleanup ------------------------------------------------------------
    def cleanup_on_failure(self, path: Path) -> Path:
        """Remove ``path`` if the job fails or is cancelled (partial outputs)."""
        self._cleanups.append(Path(path))
        return Path(path)

    def keep(self, path: Path) -> None:
        with contextlib.suppress(ValueError):
            self._cleanups.remove(Path(path))

    def run_cleanups(self) -> None:
        for path in reversed(self._cleanups):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        self._cleanups.clear()

    # -- progress -----------------------------------------------------------
    # One monotonic total per job: bytes_done and percent never go back. A caller
    # whose bytes restart from zero (a new phase: converting, then hashing) has its
    # bytes added to what the earlier phases did; a job that knows its parts up
    # front declares them with :meth:`plan` and reports each with :meth:`advance`.
    def progress(
        self,
        bytes_done: int | None = None,
        bytes_total: int | None = None,
        *,
        percent: float | None = None,
        message: str | None = None,
        force: bool = False,
    ) -> None:
        with self._progress_lock:
            done, total = bytes_done, bytes_total
            if bytes_done is not None:
                if self._phase_done is not None and bytes_done < self._phase_done:
                    self._bytes_base += self._phase_done
                self._phase_done = bytes_done
                done = self._bytes_base + bytes_done
                total = None if bytes_total is None else self._bytes_base + bytes_total
                if percent is None and total:
                    percent = 100.0 * done / total
            self._emit(done, total, percent, message, force)

    def plan(self, *parts: tuple[str, float, int]) -> None:
        """Declare the job's parts as (name, share of the bar, bytes); they may overlap."""
        with self._progress_lock:
            self._parts = {name: [share, max(0, total), 0] for name, share, total in parts}

    def advance(self, part: str, done: int, *, message: str | None = None) -> None:
        """``done`` bytes of ``part`` (see :meth:`plan`) are through."""
        with self._progress_lock:
            entry = self._parts[part]
            entry[2] = max(entry[2], min(int(done), entry[1]))
            shares = sum(e[0] for e in self._parts.values()) or 1.0
            percent = 100.0 * sum(e[0] * e[2] / e[1] for e in self._parts.values() if e[1])
            total = sum(int(e[1]) for e in self._parts.values())
            overall = sum(int(e[2]) for e in self._parts.values())
            complete = entry[2] >= entry[1]  # the end of a part must not be held back
            self._emit(overall, total, percent / shares, message or part, complete)

    def _emit(
        self,
        done: int | None,
        total: int | None,
        percent: float | None,
        message: str | None,
        force: bool,
    ) -> None:
        if percent is not None:
            percent = self._floor_percent = max(self._floor_percent, min(100.0, percent))
        if done is not None:
            done = self._floor_done = max(self._floor_done, done)
        now = time.monotonic()
        if not force and now - self._last_write < PROGRESS_INTERVAL_S:
            self._pending = (done, total, percent, message)
            return
        self._pending = None
        values: dict[str, Any] = {}
        if total is not None:
            values["bytes_total"] = total
        if done is not None:
            values["bytes_done"] = done
            self._update_rate(now, done)
            values["rate_bytes_per_s"] = self._rate
            if self._rate is not None:
                values["samples"] = self._sample(now, self._rate)
            if total and self._rate:
                values["eta_s"] = max(0.0, (total - done) / self._rate)
        if percent is not None:
            values["percent"] = round(percent, 2)
        if message is not None:
            values["message"] = message[:500]
        if not values:
            return
        self._last_write = now
        with session_scope(self.settings.DATABASE_URL) as s:
            s.execute(update(Job).where(Job.id == self.job_id).values(**values))

    def flush_progress(self) -> None:
        """Write the last update the throttle held back (the runner calls this at the end)."""
        with self._progress_lock:
            if self._pending is not None:
                self._emit(*self._pending, force=True)

    def _sample(self, now: float, rate: float) -> list[list[float]]:
        """Throughput over time for the job's chart, kept to MAX_SAMPLES points by
        dropping every other one when full (older parts get coarser, never lost)."""
        if self._t0 is None:
            self._t0 = now
        self._samples.append([round(now - self._t0, 1), round(rate)])
        if len(self._samples) > MAX_SAMPLES:
            self._samples = self._samples[::2]
        return list(self._samples)

    def _update_rate(self, now: float, done: int) -> None:
        if self._last_sample is not None:
            t0, d0 = self._last_sample
            if now > t0 and done >= d0:
                inst = (done - d0) / (now - t0)
                self._rate = inst if self._rate is None else 0.7 * self._rate + 0.3 * inst
        self._last_sample = (now, done)

    def percent_callback(self, total: int | None = None) -> Callable[[float], None]:
        """Adapter for tools that report a percentage (qemu-img -p)."""

        def report(pct: float) -> None:
            done = int(total * pct / 100) if total else None
            self.progress(done, total, percent=pct)

        return report
