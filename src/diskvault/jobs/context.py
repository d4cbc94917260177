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


class JobContext:
    def __init__(self, settings: Settings, job_id: str, params: dict[str, Any], attempt: int):
        self.settings = settings
        self.job_id = job_id
        self.params = params
        self.attempt = attempt
        self._cancel = threading.Event()
        self._stop = threading.Event()
        self._cleanups: list[Path] = []
        self._last_write = 0.0
        self._rate: float | None = None
        self._last_sample: tuple[float, int] | None = None
        self._pending: tuple[int | None, int | None, float | None, str | None] | None = None
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
    def progress(
        self,
        bytes_done: int | None = None,
        bytes_total: int | None = None,
        *,
        percent: float | None = None,
        message: str | None = None,
        force: bool = False,
    ) -> None:
        now = time.monotonic()
        if not force and now - self._last_write < PROGRESS_INTERVAL_S:
            self._pending = (bytes_done, bytes_total, percent, message)
            return
        self._pending = None
        values: dict[str, Any] = {}
        if bytes_total is not None:
            values["bytes_total"] = bytes_total
        if bytes_done is not None:
            values["bytes_done"] = bytes_done
            self._update_rate(now, bytes_done)
            values["rate_bytes_per_s"] = self._rate
            if bytes_total and self._rate:
                values["eta_s"] = max(0.0, (bytes_total - bytes_done) / self._rate)
            if percent is None and bytes_total:
                percent = 100.0 * bytes_done / bytes_total
        if percent is not None:
            values["percent"] = round(min(100.0, max(0.0, percent)), 2)
        if message is not None:
            values["message"] = message[:500]
        if not values:
            return
        self._last_write = now
        with session_scope(self.settings.DATABASE_URL) as s:
            s.execute(update(Job).where(Job.id == self.job_id).values(**values))

    def flush_progress(self) -> None:
        """Write the last update the throttle held back (the runner calls this at the end)."""
        if self._pending is not None:
            done, total, percent, message = self._pending
            self.progress(done, total, percent=percent, message=message, force=True)

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
