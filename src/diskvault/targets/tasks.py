"""Periodic reconcile of iSCSI targets (every node runs it for its own targets)."""

from __future__ import annotations

from diskvault.config import Settings
from diskvault.jobs.scheduler import periodic
from diskvault.targets.reconcile import reconcile


@periodic("targets-reconcile", lambda s: s.TARGET_RECONCILE_INTERVAL_S, per_node=True)
def reconcile_targets(settings: Settings) -> None:
    reconcile(settings)
