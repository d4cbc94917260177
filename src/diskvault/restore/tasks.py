"""Periodic work of file-level restore: unmount what has been idle too long."""

from __future__ import annotations

from diskvault.config import Settings
from diskvault.jobs.scheduler import periodic
from diskvault.restore import service


@periodic("restore-expire-idle", lambda s: s.RESTORE_SWEEP_INTERVAL_S, per_node=True)
def expire_idle(settings: Settings) -> None:
    # per_node: mounts are loop devices and processes of the node that made them.
    service.expire_idle(settings)
