"""Hosts the job consumers and the scheduler inside a process.

``diskvault serve`` starts one on embedded defaults; ``diskvault worker``
starts one against Redis for scale-out.
"""

from __future__ import annotations

import structlog

from diskvault.config import Settings
from diskvault.jobs import queue, registry, runner, service
from diskvault.jobs.scheduler import Scheduler

log = structlog.get_logger("diskvault.worker")
_ = runner  # importing the runner registers the executor with the queue


class WorkerHost:
    def __init__(self, settings: Settings, *, workers: int, node: str | None = None) -> None:
        self.settings = settings
        self.node = node or settings.NODE
        self.workers = workers
        self.consumers: list[queue.QuietConsumer] = []
        self.scheduler = Scheduler(settings)

    def recover(self) -> None:
        """Embedded mode owns every job: what it was running when it died is dead."""
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
        self.recover()
        if self.workers > 0:
            self.consumers = queue.consumers(self.settings, self.workers, self.node)
            for consumer in self.consumers:
                consumer.start()
        self.scheduler.start()
        log.info("worker started", node=self.node, workers=self.workers)

    def stop(self) -> None:
        self.scheduler.stop()
        for consumer in self.consumers:
            consumer.stop(graceful=False)
        log.info("worker stopped", node=self.node)
