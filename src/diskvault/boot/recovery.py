"""Instant recovery: boot a restore point in place, over the diskless machines' iSCSI path.

The point's qcow2 chain is only the backing of a new overlay (opened read-only
by the layer's qemu-storage-daemon, so immutable points work and the chain's
files are never written); the guest's writes go to the overlay, which the
writeback layer code serves through FUSE to a target of its own. The
recovery answers ``/boot/ipxe`` for its MAC: an existing machine's, or a MAC
of its own (a temporary machine that ends with the recovery).

While a recovery runs, its point (and the points it backs onto) cannot be
deleted or merged: the backups domain asks :func:`busy_reason`.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from diskvault.backups import chain as chains
from diskvault.backups import service as backups
from diskvault.backups.models import Backup, BackupChain
from diskvault.boot import service, writeback
from diskvault.boot.errors import (
    PointNotBootable,
    RecoveryMacBusy,
    RecoveryNotFound,
    WritebackFull,
)
from diskvault.boot.models import Machine, MachineMode, Recovery
from diskvault.config import Settings
from diskvault.db.pagination import PageParams, paginate
from diskvault.errors import DiskvaultError, NotFound, Unprocessable
from diskvault.jobs.models import Job, JobStatus
from diskvault.targets import service as targets
from diskvault.targets.iqn import make_iqn
from diskvault.targets.models import Target

log = structlog.get_logger("diskvault.boot")

PROMOTE_JOB = "recovery-promote"
_DELETING = ("backup-delete", "backup-prune")


def layer_key(recovery_id: str) -> str:
    """The recovery's folder under WRITEBACK_PATH (machines use their id)."""
    return f"recovery-{recovery_id}"


def overlay_path(settings: Settings, recovery: Recovery) -> Path:
    return writeback.layer_paths(settings, layer_key(recovery.id)).overlay


def get(session: Session, recovery_id: str) -> Recovery:
    recovery = session.get(Recovery, recovery_id)
    if recovery is None:
        raise RecoveryNotFound(id=recovery_id)
    return recovery


def list_recoveries(session: Session, params: PageParams) -> tuple[list[Recovery], int]:
    stmt: Select[Any] = select(Recovery).order_by(Recovery.created_at.desc())
    return paginate(session, stmt, params)


def describe(session: Session, settings: Settings, recovery: Recovery) -> dict[str, Any]:
    """A recovery as the API shows it: its point, machine, overlay size and uptime."""
    machine = session.get(Machine, recovery.machine_id) if recovery.machine_id else None
    overlay = overlay_path(settings, recovery)
    try:
        size = overlay.stat().st_blocks * 512
    except OSError:
        size = 0
    started = recovery.created_at.replace(tzinfo=recovery.created_at.tzinfo or UTC)
    return {
        "id": recovery.id,
        "backup_id": recovery.backup_id,
        "machine_id": recovery.machine_id,
        "machine": machine.name if machine else None,
        "temporary_machine": machine is None,
        "mac": recovery.mac,
        "mode": recovery.mode,
        "initiator_iqn": recovery.initiator_iqn,
        "target_id": recovery.target_id,
        "overlay_bytes": size,
        "uptime_s": round((datetime.now(UTC) - started).total_seconds(), 1),
        "error": recovery.error,
        "created_at": recovery.created_at,
        "last_boot_at": recovery.last_boot_at,
    }


# -- guards ----------------------------------------------------------------------


def busy_reason(session: Session, backup_id: str) -> str | None:
    """The backups domain's busy check: a recovery boots this point."""
    rec = session.scalar(select(Recovery).where(Recovery.backup_id == backup_id).limit(1))
    if rec is None:
        return None
    return f"instant recovery {rec.id} boots it (MAC {rec.mac}); stop it first"


chains.register_busy_check(busy_reason)


def _refuse_unbootable(session: Session, point: Backup) -> None:
    if point.verify_status == "corrupt":
        raise PointNotBootable(
            id=point.id, reason=f"verify found damage: {point.verify_detail or 'see verify'}"
        )
    chain = session.get(BackupChain, point.chain_id) if point.chain_id else None
    if chain is not None and chain.broken_reason:
        raise PointNotBootable(id=point.id, reason=f"its chain is broken: {chain.broken_reason}")
    for job in session.scalars(
        select(Job).where(
            Job.kind.in_(_DELETING), Job.status.in_([JobStatus.queued, JobStatus.running])
        )
    ):
        if job.params.get("backup_id") == point.id or (
            job.kind == "backup-prune" and job.params.get("vm_name") == point.vm_name
        ):
            raise PointNotBootable(id=point.id, reason=f"it is being deleted (job {job.id})")


def _resolve(
    session: Session, settings: Settings, machine_ref: str | None, mac: str | None
) -> tuple[Machine | None, str]:
    """The machine to attach to (if any) and the MAC that boots the point."""
    if machine_ref is None and mac is None:
        raise Unprocessable("give 'machine' (a name or id) or 'mac'")
    machine = None
    if machine_ref is not None:
        machine = session.scalar(
            select(Machine).where((Machine.name == machine_ref) | (Machine.id == machine_ref))
        )
        if machine is None:
            raise NotFound(f"machine {machine_ref} was not found")
    if mac is not None:
        mac = service.normalize_mac(mac)
        if machine is not None and machine.mac != mac:
            raise Unprocessable(f"machine {machine.name} has MAC {machine.mac}, not {mac}")
        machine = machine or session.scalar(select(Machine).where(Machine.mac == mac))
    assert machine is not None or mac is not None
    mac = machine.mac if machine is not None else mac
    assert mac is not None
    other = session.scalar(select(Recovery).where(Recovery.mac == mac))
    if other is not None:
        raise RecoveryMacBusy(
            mac=mac, what=f"restore point {other.backup_id} (recovery {other.id})"
        )
    if machine is not None and (who := service.logged_in(session, settings, machine)):
        raise RecoveryMacBusy(mac=mac, what=f"machine {machine.name} (logged in: {', '.join(who)})")
    return machine, mac


# -- the layer and its target ------------------------------------------------------


def serve(session: Session, settings: Settings, recovery: Recovery, *, fresh: bool) -> Target:
    """Start the recovery's overlay daemon and (re)make its target; returns the target."""
    point = backups.get_backup(session, recovery.backup_id)
    key = layer_key(recovery.id)
    target = session.get(Target, recovery.target_id) if recovery.target_id else None
    if not fresh and target is not None and writeback.running(settings, key):
        return target
    try:
        disk = writeback.start(
            settings, key, chains.image_of(session, point), fresh=fresh, base_fmt="qcow2"
        )
        if target is None:
            target = targets.create_target(
                session,
                settings,
                name=f"recovery-{recovery.id[:12]}",
                path=str(disk),
                machine_id=recovery.machine_id,
                initiators=[recovery.initiator_iqn],
                owner=recovery.owner,
            )
            recovery.target_id = target.id
        else:
            target = targets.restart_target(session, settings, target.id, force=True)
    except DiskvaultError as exc:
        recovery.error = exc.message
        session.commit()
        raise
    recovery.error = None
    session.commit()
    return target


def start(
    session: Session,
    settings: Settings,
    backup_id: str,
    *,
    machine: str | None,
    mac: str | None,
    mode: MachineMode,
    owner: str | None,
) -> Recovery:
    """Publish a restore point as the disk ``mac`` (or ``machine``) boots next."""
    point = backups.completed(session, backup_id, "booted")
    _refuse_unbootable(session, point)
    attached, boot_mac = _resolve(session, settings, machine, mac)
    initiator = (
        attached.initiator_iqn
        if attached is not None
        else make_iqn(
            "recovery-" + boot_mac.replace(":", ""),
            date=settings.IQN_DATE,
            domain=settings.IQN_DOMAIN,
        )
    )
    recovery = Recovery(
        backup_id=point.id,
        machine_id=attached.id if attached else None,
        mac=boot_mac,
        initiator_iqn=initiator,
        mode=mode,
        node=settings.NODE,
        owner=owner,
    )
    session.add(recovery)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise RecoveryMacBusy(mac=boot_mac, what="another restore point") from None
    try:
        serve(session, settings, recovery, fresh=True)
    except BaseException:
        _teardown(session, settings, recovery)
        raise
    log.info("instant recovery started", recovery=recovery.id, point=point.id, mac=boot_mac)
    return recovery


def _teardown(session: Session, settings: Settings, recovery: Recovery) -> None:
    if recovery.target_id is not None:
        with contextlib.suppress(NotFound):
            targets.delete_target(session, settings, recovery.target_id, force=True)
    writeback.remove(settings, layer_key(recovery.id))
    session.delete(recovery)
    session.commit()


def stop(session: Session, settings: Settings, recovery_id: str) -> None:
    """End the recovery: log the guest out, stop its layer and throw the overlay away."""
    recovery = get(session, recovery_id)
    _teardown(session, settings, recovery)
    log.info("instant recovery stopped", recovery=recovery_id)


def flag_storage(session: Session, settings: Settings, free: int | None) -> list[str]:
    """Put (``free`` given) or clear the storage-full error on this node's recoveries."""
    flagged = []
    full = WritebackFull(
        path=str(settings.writeback_dir),
        free=free or 0,
        detail="the recovered guest's writes fail once nothing is left; the chain is untouched",
    )
    for rec in session.scalars(select(Recovery).where(Recovery.node == settings.NODE)):
        if free is not None:
            rec.error = full.message
            flagged.append(f"recovery {rec.id}")
        elif rec.error and rec.error.startswith(f"writeback storage {settings.writeback_dir} "):
            rec.error = None
    return flagged


def for_mac(session: Session, mac: str) -> Recovery | None:
    return session.scalar(select(Recovery).where(Recovery.mac == mac))


def startup(session: Session, settings: Settings) -> None:
    """Bring this node's recoveries back after a restart (their overlays are kept)."""
    for recovery in session.scalars(select(Recovery).where(Recovery.node == settings.NODE)):
        with contextlib.suppress(DiskvaultError):
            serve(session, settings, recovery, fresh=False)
