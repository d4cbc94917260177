"""Machine rules: register, edit, delete, serve the writeback layer, apply, discard.

The writeback layer of a machine is (re)built on its image's current version
whenever it must start afresh: at every boot in discard mode, after its data
went into a new version, or on discard. Its target (one per machine, created
through the targets domain) is then re-created so tgtd opens the new file.

Work that touches a layer's daemon runs in the ``diskvault serve`` process of
the machine's node, which owns those daemons; a per-machine lock keeps two
requests (an iPXE retry, say) from rebuilding one layer at once.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from typing import Any

import structlog
from sqlalchemy import Select, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from diskvault.boot import versions, writeback
from diskvault.boot.errors import (
    InvalidMac,
    MachineBusy,
    MachineConnected,
    MachineNameTaken,
    MachineNotFound,
    MacTaken,
    WritebackFull,
)
from diskvault.boot.models import BootSession, Machine, MachineMode, MachineStatus
from diskvault.config import Settings
from diskvault.db.listing import Listing
from diskvault.db.listing import apply as listing_apply
from diskvault.db.pagination import PageParams, paginate
from diskvault.errors import DiskvaultError, NotFound
from diskvault.images import service as images
from diskvault.jobs import service as jobs
from diskvault.jobs.models import Job
from diskvault.targets import service as targets
from diskvault.targets.iqn import make_iqn, validate_iqn
from diskvault.targets.models import Target

log = structlog.get_logger("diskvault.boot")

APPLY_JOB = "boot-writeback-apply"
_MAC = re.compile(r"^[0-9a-f]{2}([:-]?)[0-9a-f]{2}(?:\1[0-9a-f]{2}){4}$")

_locks_guard = threading.Lock()
_locks: dict[str, threading.Lock] = {}


@contextlib.contextmanager
def machine_lock(machine_id: str) -> Iterator[None]:
    with _locks_guard:
        lock = _locks.setdefault(machine_id, threading.Lock())
    with lock:
        yield


def normalize_mac(text: str) -> str:
    """``52:54:00:12:34:56`` from any of ``52-54-00-...``, ``525400123456``, upper case."""
    raw = text.strip().lower()
    if not _MAC.match(raw):
        raise InvalidMac(mac=text)
    digits = re.sub("[:-]", "", raw)
    if int(digits[:2], 16) & 1 or digits == "0" * 12:
        raise InvalidMac("it is a multicast or all-zero address, not a NIC's", mac=text)
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


# -- reading --------------------------------------------------------------------


def get_machine(session: Session, machine_id: str) -> Machine:
    machine = session.get(Machine, machine_id)
    if machine is None:
        raise MachineNotFound(id=machine_id)
    return machine


MACHINE_SORTS: dict[str, Any] = {
    "name": Machine.name,
    "mac": Machine.mac,
    "status": Machine.status,
    "booted": Machine.last_boot_at,
}


def list_machines(
    session: Session,
    params: PageParams,
    *,
    image_id: str | None = None,
    listing: Listing | None = None,
) -> tuple[list[Machine], int]:
    stmt: Select[Any] = listing_apply(
        select(Machine), listing, sorts=MACHINE_SORTS, default="name", tiebreak=Machine.id,
        search=(Machine.name, Machine.mac),
    )  # fmt: skip
    if image_id is not None:
        stmt = stmt.where(Machine.image_id == image_id)
    return paginate(session, stmt, params)


def list_sessions(
    session: Session, machine_id: str, params: PageParams
) -> tuple[list[BootSession], int]:
    get_machine(session, machine_id)
    stmt: Select[Any] = (
        select(BootSession)
        .where(BootSession.machine_id == machine_id)
        .order_by(BootSession.started_at.desc())
    )
    return paginate(session, stmt, params)


def target_of(session: Session, machine: Machine) -> Target | None:
    return session.get(Target, machine.target_id) if machine.target_id else None


def logged_in(session: Session, settings: Settings, machine: Machine) -> list[str]:
    """Initiators logged in to the machine's disk right now."""
    if machine.target_id is None:
        return []
    try:
        return targets.get_status(session, settings, machine.target_id).initiators
    except NotFound:
        return []


def _refuse_if_connected(session: Session, settings: Settings, m: Machine, action: str) -> None:
    if initiators := logged_in(session, settings, m):
        raise MachineConnected(name=m.name, initiators=", ".join(initiators), action=action)


def _refuse_if_applying(machine: Machine) -> None:
    if machine.status == MachineStatus.APPLYING:
        raise MachineBusy(
            "its writeback is being applied to a new image version; wait for the job",
            name=machine.name,
            status=machine.status.value,
        )


# -- the writeback layer and its target ------------------------------------------


def record_failure(session: Session, machine: Machine, exc: DiskvaultError) -> None:
    machine.status = MachineStatus.ERROR
    machine.error = exc.message
    machine.error_code = "storage_full" if isinstance(exc, WritebackFull) else "layer"
    session.commit()
    log.warning("writeback layer failed", machine=machine.name, error=exc.message)


def serve(session: Session, settings: Settings, machine: Machine, *, fresh: bool) -> Target:
    """Make the machine's layer run and its target serve it; returns the target.

    Raises ImageNotBootable (the machine is left as it was) or the layer or
    target error (recorded on the machine as ERROR).
    """
    latest = versions.current(session, settings, machine.image_id)
    fresh = fresh or machine.reset_pending or machine.layer_version is None
    target = target_of(session, machine)
    if not fresh and target is not None and writeback.running(settings, machine.id):
        return target
    base = (
        latest
        if fresh
        else versions.get_version(session, machine.image_id, machine.layer_version or 1)
    )
    try:
        disk = writeback.start(
            settings, machine.id, versions.file_path(session, settings, base), fresh=fresh
        )
        if target is None:
            target = targets.create_target(
                session,
                settings,
                name=f"boot-{machine.name}",
                path=str(disk),
                machine_id=machine.id,
                initiators=[machine.initiator_iqn],
                owner=machine.owner,
            )
            machine.target_id = target.id
        else:
            target = targets.restart_target(session, settings, target.id, force=True)
    except DiskvaultError as exc:
        record_failure(session, machine, exc)
        raise
    machine.layer_version = base.version
    machine.status, machine.error, machine.error_code = MachineStatus.READY, None, None
    machine.reset_pending = False
    session.commit()
    return target


# -- machines ------------------------------------------------------------------


def _check_unique(session: Session, *, name: str | None, mac: str | None, own: str = "") -> None:
    if mac is not None:
        other = session.scalar(select(Machine).where(Machine.mac == mac, Machine.id != own))
        if other is not None:
            raise MacTaken(mac=mac, machine=other.name)
    if name is not None and session.scalar(
        select(Machine.id).where(Machine.name == name, Machine.id != own)
    ):
        raise MachineNameTaken(name=name)


def create_machine(
    session: Session,
    settings: Settings,
    *,
    name: str,
    mac: str,
    image_id: str,
    mode: MachineMode = MachineMode.discard,
    initiator_iqn: str | None = None,
    owner: str | None = None,
) -> Machine:
    """Register a machine and build its layer and target now if its image is bootable.

    A failure building them is recorded on the machine (status ERROR), not raised.
    """
    mac = normalize_mac(mac)
    _check_unique(session, name=name, mac=mac)
    images.get(session, image_id)
    initiator = (
        validate_iqn(initiator_iqn)
        if initiator_iqn
        else make_iqn(f"client-{name}", date=settings.IQN_DATE, domain=settings.IQN_DOMAIN)
    )
    machine = Machine(
        name=name,
        mac=mac,
        image_id=image_id,
        mode=mode,
        initiator_iqn=initiator,
        node=settings.NODE,
        owner=owner,
    )
    session.add(machine)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        _check_unique(session, name=name, mac=mac)
        raise
    with machine_lock(machine.id), contextlib.suppress(DiskvaultError):
        serve(session, settings, machine, fresh=True)
    log.info("machine registered", machine=name, mac=mac, status=machine.status.value)
    return machine


def update_machine(
    session: Session,
    settings: Settings,
    machine_id: str,
    *,
    name: str | None = None,
    mac: str | None = None,
    image_id: str | None = None,
    mode: MachineMode | None = None,
    initiator_iqn: str | None = None,
) -> Machine:
    """Edit a machine; a new image or initiator needs it shut down (409 otherwise)."""
    with machine_lock(machine_id):
        machine = get_machine(session, machine_id)
        _refuse_if_applying(machine)
        mac = normalize_mac(mac) if mac is not None else None
        _check_unique(session, name=name, mac=mac, own=machine.id)
        new_image = image_id is not None and image_id != machine.image_id
        new_initiator = initiator_iqn is not None and initiator_iqn != machine.initiator_iqn
        if new_image or new_initiator:
            _refuse_if_connected(session, settings, machine, "edit it")
        if new_image:
            images.get(session, image_id or "")
            machine.image_id = image_id or machine.image_id
            machine.reset_pending = True  # its layer sat on the old image
        if new_initiator:
            machine.initiator_iqn = validate_iqn(initiator_iqn or "")
        machine.name = name or machine.name
        machine.mac = mac or machine.mac
        machine.mode = mode or machine.mode
        session.commit()
        if new_initiator and machine.target_id is not None:
            # Targets have no ACL edit: a new one is made around the same layer.
            targets.delete_target(session, settings, machine.target_id, force=True)
            machine.target_id = None
            session.commit()
            with contextlib.suppress(DiskvaultError):
                serve(session, settings, machine, fresh=False)
    return machine


def delete_machine(
    session: Session, settings: Settings, machine_id: str, *, force: bool = False
) -> None:
    """Remove the machine, its target and its writeback layer (409 while booted)."""
    with machine_lock(machine_id):
        machine = get_machine(session, machine_id)
        _refuse_if_applying(machine)
        if not force:
            _refuse_if_connected(session, settings, machine, "delete it")
        if machine.target_id is not None:
            with contextlib.suppress(NotFound):
                targets.delete_target(session, settings, machine.target_id, force=True)
        writeback.remove(settings, machine.id)
        session.execute(delete(BootSession).where(BootSession.machine_id == machine.id))
        session.delete(machine)
        session.commit()
    log.info("machine deleted", machine=machine.name)


def discard_writeback(session: Session, settings: Settings, machine_id: str) -> Machine:
    """Throw the machine's writes away: a new empty layer on the current version."""
    with machine_lock(machine_id):
        machine = get_machine(session, machine_id)
        _refuse_if_applying(machine)
        _refuse_if_connected(session, settings, machine, "discard its writeback")
        serve(session, settings, machine, fresh=True)
    return machine


def request_apply(
    session: Session,
    settings: Settings,
    machine_id: str,
    *,
    comment: str | None = None,
    owner: str | None = None,
) -> Job:
    """Queue merging the machine's writeback into a new image version (409 while booted)."""
    with machine_lock(machine_id):
        machine = get_machine(session, machine_id)
        _refuse_if_applying(machine)
        if machine.layer_version is None or machine.reset_pending:
            raise MachineBusy(
                "it has no writes to apply (its layer is new or already applied); boot it first",
                name=machine.name,
                status=machine.status.value,
            )
        _refuse_if_connected(session, settings, machine, "apply its writeback")
        versions.bootable_image(session, settings, machine.image_id)
        machine.status = MachineStatus.APPLYING
        params = {"machine_id": machine.id, "comment": comment, "owner": owner}
        # One commit for both rows: the job and the APPLYING state appear together.
        return jobs.submit(
            settings, APPLY_JOB, params, node=settings.NODE, owner=owner, session=session
        )


def image_usage(session: Session, image_id: str) -> str | None:
    """The images domain's usage check: machines boot it."""
    names = list(session.scalars(select(Machine.name).where(Machine.image_id == image_id)))
    if not names:
        return None
    return f"machines {', '.join(sorted(names))} boot it; delete them or point them elsewhere"
