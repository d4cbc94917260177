"""Hosts the job consumers and the scheduler inside a process.

``diskvault serve`` starts one on embedded defaults; ``diskvault worker``
starts one against Redis for scale-out.
"""

from __future__ import annotations

import threading

import structlog

from diskvault.config import Settings
from diskvault.jobs import queue, registry, runner, service
from diskvault.jobs.scheduler import Scheduler
from diskvault.tools import children, orphans

log = structlog.get_logger("diskvault.worker")


class WorkerHost:
    def __init__(self, settings: Settings, *, workers: int, node: str | None = None) -> None:
        self.settings = settings
        self.node = node or settings.NODE
        self.workers = workers
        self.consumers: list[queue.QuietConsumer] = []
        self.scheduler = Scheduler(settings)
        self._stopping = threading.Lock()
        self._stop_begun = False

    def recover(self) -> None:
        """Stop what a dead run left, then settle its jobs.

        Embedded mode owns every job: what it was running when it died is dead.
        """
        run_dir = self.settings.DATA_DIR / "run"
        run_dir.mkdir(parents=True, exist_ok=True)
        stopped = orphans.reap_orphans(run_dir)
        if stopped:
            log.warning("stopped child processes left by a previous run", count=len(stopped))
        children.REGISTRY.configure(run_dir)
        if not self.settings.QUEUE_URL:
            reaped = service.reap(self.settings, node=self.settings.NODE, older_than=0)
            if reaped:
                log.warning(
                    "failed or requeued jobs interrupted by the last shutdown", count=reaped
                )
        redispatched = service.redispatch_queued(self.settings, node=self.node)
        if redispatched:
            log.info("re-dispatched queued jobs", count=redispatched)

    def start(self) -> None:
        registry.load_all()
        runner.resume()
        self.recover()
        if self.workers > 0:
            self.consumers = queue.consumers(self.settings, self.workers, self.node)
            for consumer in self.consumers:
                consumer.start()
        self.scheduler.start()
        log.info("worker started", node=self.node, workers=self.workers)

    def begin_stop(self) -> None:
        """Take no new job and interrupt the running ones; returns at once."""
        with self._stopping:
            if self._stop_begun:
                return
            self._stop_begun = True
        for consumer in self.consumers:
            consumer.stop_flag.set()
        runner.begin_shutdown()
        log.info("stopping: no new jobs, running ones interrupted", node=self.node)

    def stop(self) -> None:
        """A clean stop: interrupted jobs get SHUTDOWN_GRACE_S to requeue themselves."""
        self.begin_stop()
        self.scheduler.stop()
        left = runner.wait_idle(self.settings.SHUTDOWN_GRACE_S)
        for job_id in left:
            runner.requeue_interrupted(self.settings, job_id)
        for consumer in self.consumers:
            consumer.stop(graceful=False)
        log.info("worker stopped", node=self.node, requeued_after_grace=len(left))
