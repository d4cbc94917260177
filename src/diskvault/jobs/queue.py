"""Huey wiring. Huey only dispatches job ids; the ``jobs`` table is the truth.

Embedded (default): one SqliteHuey file in DATA_DIR, consumed by threads
inside ``diskvault serve``. Scale-out: RedisHuey, with a shared queue plus one
queue per node for node-bound jobs; ``diskvault worker --node N`` consumes the
shared queue and its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import lru_cache

from huey import Huey, RedisHuey, SqliteHuey
from huey.consumer import Consumer

from diskvault.config import Settings

TASK_NAME = "run_job"

_run_job: Callable[[Settings, str], None] | None = None


def set_executor(fn: Callable[[Settings, str], None]) -> None:
    """The runner registers itself here (avoids an import cycle)."""
    global _run_job
    _run_job = fn


def queue_name(settings: Settings, node: str | None) -> str:
    base = settings.QUEUE_NAME
    return f"{base}-node-{node}" if node else base


@lru_cache(maxsize=32)
def huey_for(queue_url: str, data_dir: str, name: str) -> Huey:
    if queue_url.startswith("redis"):
        huey: Huey = RedisHuey(name, url=queue_url, blocking=True, read_timeout=1)
    else:
        huey = SqliteHuey(name, filename=f"{data_dir}/queue.sqlite3", timeout=30)
    return huey


def _settings_key(settings: Settings) -> tuple[str, str]:
    return settings.QUEUE_URL, str(settings.DATA_DIR.absolute())


def queue(settings: Settings, node: str | None) -> Huey:
    # Embedded mode has one process, so node binding needs no queue of its own.
    name = queue_name(settings, node if settings.QUEUE_URL else None)
    huey = huey_for(*_settings_key(settings), name)
    _register(huey, settings)
    return huey


_registered: set[int] = set()
_lock = threading.Lock()


def _register(huey: Huey, settings: Settings) -> None:
    with _lock:
        if id(huey) in _registered:
            return

        @huey.task(name=TASK_NAME)
        def run_job(job_id: str) -> None:
            assert _run_job is not None, "diskvault.jobs.runner was not imported"
            _run_job(settings, job_id)

        huey._dv_task = run_job
        _registered.add(id(huey))


def dispatch(settings: Settings, job_id: str, node: str | None, delay: float = 0) -> None:
    huey = queue(settings, node)
    task = huey._dv_task
    if delay > 0:
        task.schedule((job_id,), delay=delay)
    else:
        task(job_id)


def ping(settings: Settings) -> bool:
    try:
        queue(settings, None).pending_count()
        return True
    except Exception:
        return False


def pending(settings: Settings) -> int:
    try:
        return int(queue(settings, None).pending_count())
    except Exception:
        return -1


class QuietConsumer(Consumer):
    """A consumer that leaves signal handling to its host (uvicorn or worker)."""

    def _set_signal_handlers(self) -> None:
        return None


def consumers(settings: Settings, workers: int, node: str | None) -> list[QuietConsumer]:
    names = [None, node] if settings.QUEUE_URL and node else [None]
    out = []
    for name in names:
        huey = queue(settings, name)
        out.append(
            QuietConsumer(
                huey,
                workers=workers,
                periodic=False,
                initial_delay=0.02,
                backoff=1.2,
                max_delay=0.25,
                scheduler_interval=1,
                worker_type="thread",
                check_worker_health=False,
            )
        )
    return out
