"""Job progress for WebSocket watchers: one database poll per job, shared by its watchers.

Each watcher sends the latest known state every :data:`SEND_INTERVAL_S`, whether
or not a poll finished since: a slow read (a busy database, 50 watchers, 20 jobs)
delays how fresh a message is, never whether it is sent. The 500 ms promise
then depends only on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from diskvault.config import Settings
from diskvault.db.engine import session_factory
from diskvault.jobs.models import Job

SEND_INTERVAL_S = 0.25  # the API promises at least one message per 500 ms
POLL_INTERVAL_S = 0.2
READ_THREADS = 8  # database reads for streams, apart from the request threads


@dataclass
class _Watch:
    watchers: int = 0
    message: dict[str, Any] | None = None
    found: bool = True
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


Render = Callable[[Job], dict[str, Any]]


class JobStreams:
    def __init__(self, settings: Settings, render: Render) -> None:
        self.settings = settings
        self.render = render
        self._watches: dict[str, _Watch] = {}
        self._limiter = anyio.CapacityLimiter(READ_THREADS)

    def _read(self, job_id: str) -> tuple[dict[str, Any] | None, bool]:
        session = session_factory(self.settings.DATABASE_URL)()
        try:
            job = session.get(Job, job_id)
            if job is None:
                return None, True
            return self.render(job), job.status.finished
        finally:
            session.close()

    async def _poll(self, job_id: str, watch: _Watch) -> None:
        try:
            while watch.watchers > 0:
                message, finished = await anyio.to_thread.run_sync(
                    self._read, job_id, limiter=self._limiter
                )
                watch.found = message is not None
                if message is not None:
                    watch.message = message
                watch.ready.set()
                if finished:
                    watch.finished.set()
                    return
                await asyncio.sleep(POLL_INTERVAL_S)
        finally:
            if self._watches.get(job_id) is watch:
                del self._watches[job_id]

    @contextlib.asynccontextmanager
    async def watch(self, job_id: str) -> AsyncIterator[_Watch]:
        watch = self._watches.get(job_id)
        if watch is None:
            watch = self._watches[job_id] = _Watch()
        watch.watchers += 1
        if watch.task is None:
            watch.task = asyncio.create_task(self._poll(job_id, watch))
        try:
            yield watch
        finally:
            watch.watchers -= 1

    async def messages(self, job_id: str) -> AsyncGenerator[dict[str, Any]]:
        """The job's state now, then at least every SEND_INTERVAL_S until it ends.

        Yields nothing if the job does not exist.
        """
        async with self.watch(job_id) as watch:
            await watch.ready.wait()
            if not watch.found or watch.message is None:
                return
            while True:
                yield watch.message
                if watch.finished.is_set():
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(watch.finished.wait(), SEND_INTERVAL_S)
