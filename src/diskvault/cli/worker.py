"""``diskvault worker``: a scale-out job consumer on Redis."""

from __future__ import annotations

import signal
import threading

import typer

from diskvault.cli.common import console
from diskvault.errors import ConfigError


def worker(
    node: str = typer.Option(None, "--node", help="this host's node name (DISKVAULT_NODE)"),
    workers: int = typer.Option(None, "--workers", help="worker threads (DISKVAULT_WORKERS)"),
) -> None:
    """Consume jobs from Redis: the shared queue plus this node's own queue.

    Example: DISKVAULT_QUEUE_URL=redis://127.0.0.1:6379/0 diskvault worker --node host-a
    """
    from diskvault.config import load_settings
    from diskvault.logging import configure

    overrides: dict[str, object] = {"NODE": node} if node else {}
    settings = load_settings(**overrides)
    if not settings.QUEUE_URL.startswith("redis"):
        raise ConfigError(
            setting="DISKVAULT_QUEUE_URL",
            detail="diskvault worker needs a redis:// queue; 'diskvault serve' runs jobs itself",
        )
    configure(settings.LOG_LEVEL, settings.LOG_FORMAT)
    from diskvault.jobs.worker import WorkerHost

    host = WorkerHost(settings, workers=workers or settings.WORKERS or 1)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    host.start()
    console.print(f"worker on node {host.node} consuming {settings.QUEUE_URL}", highlight=False)
    stop.wait()
    host.stop()
