"""Make the backend match the DB: re-create missing targets, remove strays we own.

Runs at start-up and then every TARGET_RECONCILE_INTERVAL_S on each node
(targets live in that node's tgtd or kernel). It only touches this node's
rows, and removes only backend targets whose IQN starts with diskvault's
prefix (``iqn.<IQN_DATE>.<IQN_DOMAIN>:``) and that no row describes, so
targets made by hand or by other software are left alone.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import select

from diskvault.config import Settings
from diskvault.db.engine import session_scope
from diskvault.targets import manager
from diskvault.targets.backends import TargetBackend, TargetInfo
from diskvault.targets.errors import BackendUnavailable, TargetError, TargetNotFound
from diskvault.targets.models import Target, TargetStatus
from diskvault.targets.service import apply, backend_lock, chap_of, owned_prefix

log = structlog.get_logger("diskvault.targets")

# A PENDING row this old lost its creator (a crash mid-create): finish creating it.
STALE_PENDING = timedelta(minutes=5)


@dataclass
class ReconcileReport:
    started_tgtd: bool = False
    backend_down: str | None = None
    created: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def _matches(target: Target, info: TargetInfo) -> bool:
    """The backend target serves the row's file at the row's LUN to the row's initiators."""
    luns = {lun.lun: lun.backing_path for lun in info.luns}
    if luns.get(target.lun) != target.path:
        return False
    if target.chap_user is not None and target.chap_user not in info.chap_users:
        return False
    if target.initiators:
        return sorted(info.initiators) == sorted(target.initiators) and not info.open_access
    return info.open_access


def _recreate(backend: TargetBackend, settings: Settings, target: Target, stale: bool) -> None:
    if stale:
        with contextlib.suppress(TargetNotFound):
            backend.delete_target(target.iqn, force=True)
    apply(backend, target, chap_of(settings, target))


def reconcile(settings: Settings) -> ReconcileReport:
    """One pass; never raises for backend trouble (it is recorded on the rows instead)."""
    report = ReconcileReport()
    if manager.stopping(settings):
        return report  # the server is shutting down and has stopped its tgtd
    with backend_lock, session_scope(settings.DATABASE_URL) as session:
        try:
            report.started_tgtd = manager.ensure_tgtd(settings)
            backend = manager.backend(settings)
            present = {info.iqn: info for info in backend.list_targets()}
        except BackendUnavailable as exc:
            report.backend_down = exc.message
            if manager.stopping(settings):
                return report  # stopped on purpose: the targets are not lost
            rows = session.scalars(
                select(Target).where(
                    Target.node == settings.NODE, Target.status == TargetStatus.ACTIVE
                )
            ).all()
            marked = [t.iqn for t in rows]
            for target in rows:
                target.status = TargetStatus.INACTIVE
                target.error = exc.message
            if marked:
                log.warning("iSCSI backend unavailable", error=exc.message, inactive=marked)
            return report

        wanted = set(session.scalars(select(Target.iqn)))
        cutoff = datetime.now(UTC) - STALE_PENDING
        rows = session.scalars(select(Target).where(Target.node == settings.NODE)).all()
        for target in rows:
            if target.status == TargetStatus.PENDING and target.updated_at > cutoff:
                continue  # being created right now, by this or another process
            info = present.get(target.iqn)
            if info is not None and _matches(target, info):
                if target.status != TargetStatus.ACTIVE:
                    target.status, target.error = TargetStatus.ACTIVE, None
                continue
            try:
                _recreate(backend, settings, target, stale=info is not None)
            except TargetError as exc:
                target.status, target.error = TargetStatus.ERROR, exc.message
                report.failed[target.iqn] = exc.message
                continue
            target.status, target.error = TargetStatus.ACTIVE, None
            report.created.append(target.iqn)

        prefix = owned_prefix(settings)
        for iqn in sorted(set(present) - wanted):
            if not iqn.startswith(prefix):
                continue
            try:
                backend.delete_target(iqn, force=True)
            except TargetNotFound:
                pass
            except TargetError as exc:
                report.failed[iqn] = exc.message
                continue
            report.removed.append(iqn)
    if report.created or report.removed or report.failed or report.started_tgtd:
        log.info(
            "reconciled iSCSI targets",
            started_tgtd=report.started_tgtd,
            created=report.created,
            removed=report.removed,
            failed=report.failed,
        )
    return report
