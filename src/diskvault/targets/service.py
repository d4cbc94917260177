"""Target rules: validate, record the desired state, apply it to the backend, undo on failure.

Creating a target inserts a PENDING row first (the unique IQN reserves the
name, and the reconciler treats a PENDING row as work in progress, not as a
stray), then replays the backend steps. If any step fails, the steps already
done are undone and the row is deleted, so no half-made target stays in the
backend or the DB. The same :func:`apply` re-creates targets in the reconciler.

Other domains (boot's per-machine writeback layers) call :func:`create_target`
with a ``path`` and a ``machine_id`` instead of an image.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from diskvault.config import Settings
from diskvault.db.listing import Listing
from diskvault.db.listing import apply as listing_apply
from diskvault.db.pagination import PageParams, paginate
from diskvault.domains import optional_module
from diskvault.errors import Conflict, NotFound, Unprocessable
from diskvault.targets import manager, secrets
from diskvault.targets.backends import Chap, TargetBackend
from diskvault.targets.backends import Session as BackendSession
from diskvault.targets.backends.base import describe_backstore
from diskvault.targets.backends.tgt import MAX_LUN
from diskvault.targets.errors import (
    BackendUnavailable,
    InvalidBackstore,
    InvalidChap,
    InvalidLun,
    TargetError,
    TargetExists,
    TargetNotFound,
)
from diskvault.targets.iqn import (
    format_portal,
    make_iqn,
    parse_portal,
    validate_iqn,
    validate_portal,
)
from diskvault.targets.models import Target, TargetStatus

# Serializes backend changes in this process, so the reconciler never sees a
# target half-way through being created, deleted or restarted.
backend_lock = threading.RLock()


class Credentials(NamedTuple):
    user: str
    secret: str


class ImageNotServable(Unprocessable):
    template = "image {image_id} cannot be served over iSCSI: {detail}"


class ImageNotReady(Conflict):
    template = "image {image_id} is {status}, not READY; wait for it to finish and try again"


class PathNotAllowed(Unprocessable):
    template = "path {path} cannot be served: {detail}"


class TargetNotInDb(NotFound):
    template = "target {id} was not found"


@dataclass
class LiveStatus:
    """What the backend says about a target right now."""

    target: Target
    present: bool
    sessions: list[BackendSession] = field(default_factory=list)

    @property
    def initiators(self) -> list[str]:
        return sorted({s.initiator for s in self.sessions})


def owned_prefix(settings: Settings) -> str:
    """IQNs under this prefix are diskvault's: the reconciler removes strays among them."""
    return f"iqn.{settings.IQN_DATE}.{settings.IQN_DOMAIN}:"


def _image_path(session: Session, settings: Settings, image_id: str) -> str:
    """The local raw file of a READY image, or a 4xx saying why it cannot be served."""
    models = optional_module("diskvault.images.models")
    if models is None:
        raise ImageNotServable("the image library is not installed", image_id=image_id)
    image = session.get(models.Image, image_id)
    if image is None:
        raise NotFound(kind="image", id=image_id)
    status = str(getattr(image.status, "value", image.status))
    if status != "READY":
        raise ImageNotReady(image_id=image_id, status=status)
    if image.format != "raw":
        raise ImageNotServable(
            f"its format is {image.format}; iSCSI serves raw images (convert it to raw first)",
            image_id=image_id,
        )
    store = optional_module("diskvault.images.store")
    path = None
    if store is not None and image.storage_key:
        path = store.ImageStore(settings).local_path(image.storage_key)
    if path is None:
        raise ImageNotServable(
            "it is not stored on this host's disk (e.g. it is in S3)", image_id=image_id
        )
    return str(path)


def check_api_path(settings: Settings, path: str) -> str:
    """Over the API only writeback layers may be served by path, never arbitrary files.

    Returns the path with symlinks resolved, so a link changed later cannot redirect it.
    """
    resolved = Path(path).resolve()
    root = settings.writeback_dir.resolve()
    if not resolved.is_relative_to(root):
        raise PathNotAllowed(f"only files under {root} can be served by path", path=path)
    return str(resolved)


def _chap(chap: Credentials | None, mutual: Credentials | None) -> Chap | None:
    if chap is None:
        if mutual is not None:
            raise InvalidChap("mutual CHAP needs CHAP for the initiator too")
        return None
    return Chap(
        chap.user,
        chap.secret,
        mutual.user if mutual else None,
        mutual.secret if mutual else None,
    )


def chap_of(settings: Settings, target: Target) -> Chap | None:
    """The target's CHAP credentials, decrypted."""
    if target.chap_user is None or target.chap_secret is None:
        return None
    mutual = None
    if target.mutual_chap_user is not None and target.mutual_chap_secret is not None:
        mutual = Credentials(
            target.mutual_chap_user, secrets.decrypt(settings, target.mutual_chap_secret)
        )
    return _chap(
        Credentials(target.chap_user, secrets.decrypt(settings, target.chap_secret)), mutual
    )


def apply(backend: TargetBackend, target: Target, chap: Chap | None) -> None:
    """Create ``target`` in the backend; a failed step undoes the ones before it."""
    ip, port = parse_portal(target.portal)
    with contextlib.ExitStack() as undo:
        store = backend.create_backstore(f"dv-{target.id}", target.path)
        backend.create_target(target.iqn)
        undo.callback(_quietly_delete, backend, target.iqn)
        backend.create_lun(target.iqn, target.lun, store)
        allowed: list[str | None] = list(target.initiators) or [None]  # None: any initiator
        for initiator in allowed:
            backend.create_acl(target.iqn, initiator, chap)
        backend.enable_portal(target.iqn, ip, port)
        backend.save_config()
        undo.pop_all()


def _quietly_delete(backend: TargetBackend, iqn: str) -> None:
    with contextlib.suppress(TargetError):
        backend.delete_target(iqn, force=True)


def create_target(
    session: Session,
    settings: Settings,
    *,
    name: str,
    path: str | None = None,
    image_id: str | None = None,
    initiators: Sequence[str] = (),
    chap: Credentials | tuple[str, str] | None = None,
    mutual_chap: Credentials | tuple[str, str] | None = None,
    machine_id: str | None = None,
    lun: int = 1,
    iqn: str | None = None,
    portal: str | None = None,
    owner: str | None = None,
) -> Target:
    """Validate, record and create a target serving ``path`` or ``image_id`` at ``lun``."""
    target_iqn = (
        validate_iqn(iqn)
        if iqn
        else make_iqn(name, date=settings.IQN_DATE, domain=settings.IQN_DOMAIN)
    )
    allowed = list(dict.fromkeys(validate_iqn(i) for i in initiators))
    ip, port = validate_portal(portal or settings.ISCSI_PORTAL)
    if not 1 <= lun <= MAX_LUN:
        raise InvalidLun(f"LUNs are 1-{MAX_LUN} (LUN 0 is the controller)", lun=lun)
    if (path is None) == (image_id is None):
        raise InvalidBackstore("give exactly one of path and image_id", name=name, path=path)
    source = _image_path(session, settings, image_id) if image_id is not None else str(path)
    describe_backstore("check", source)
    creds = _chap(
        Credentials(*chap) if chap else None, Credentials(*mutual_chap) if mutual_chap else None
    )
    if session.scalar(select(Target.id).where(Target.iqn == target_iqn)):
        raise TargetExists(what="target", name=target_iqn)

    target = Target(
        name=name,
        iqn=target_iqn,
        status=TargetStatus.PENDING,
        image_id=image_id,
        machine_id=machine_id,
        path=source,
        lun=lun,
        portal=format_portal(ip, port),
        initiators=allowed,
        chap_user=creds.user if creds else None,
        chap_secret=secrets.encrypt(settings, creds.secret) if creds else None,
        mutual_chap_user=creds.mutual_user if creds else None,
        mutual_chap_secret=(
            secrets.encrypt(settings, creds.mutual_secret)
            if creds and creds.mutual_secret
            else None
        ),
        node=settings.NODE,
        owner=owner,
    )
    session.add(target)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise TargetExists(what="target", name=target_iqn) from None
    try:
        with backend_lock:
            manager.ensure_tgtd(settings)
            apply(manager.backend(settings), target, creds)
    except BaseException:
        session.delete(target)
        session.commit()
        raise
    target.status = TargetStatus.ACTIVE
    session.commit()
    return target


def get_target(session: Session, target_id: str) -> Target:
    target = session.get(Target, target_id)
    if target is None:
        raise TargetNotInDb(id=target_id)
    return target


def get_by_machine(session: Session, machine_id: str) -> Target:
    """The newest target of a machine."""
    stmt = select(Target).where(Target.machine_id == machine_id).order_by(Target.created_at.desc())
    target = session.scalars(stmt.limit(1)).first()
    if target is None:
        raise NotFound(f"machine {machine_id} has no iSCSI target", kind="target", id=machine_id)
    return target


TARGET_SORTS: dict[str, Any] = {
    "created": Target.created_at,
    "iqn": Target.iqn,
    "status": Target.status,
    "portal": Target.portal,
}


def list_targets(
    session: Session,
    params: PageParams,
    *,
    status: TargetStatus | None = None,
    machine_id: str | None = None,
    image_id: str | None = None,
    listing: Listing | None = None,
) -> tuple[list[Target], int]:
    stmt: Select[Any] = listing_apply(
        select(Target), listing, sorts=TARGET_SORTS, default="created", tiebreak=Target.id,
        search=(Target.iqn, Target.path),
    )  # fmt: skip
    if status is not None:
        stmt = stmt.where(Target.status == status)
    if machine_id is not None:
        stmt = stmt.where(Target.machine_id == machine_id)
    if image_id is not None:
        stmt = stmt.where(Target.image_id == image_id)
    return paginate(session, stmt, params)


def get_status(session: Session, settings: Settings, target_id: str) -> LiveStatus:
    """Live status from the backend: present or not, and who is logged in."""
    target = get_target(session, target_id)
    try:
        with backend_lock:  # never report a target the reconciler is half-way through making
            live = manager.backend(settings).get_target_status(target.iqn)
    except TargetNotFound:
        return LiveStatus(target, present=False)
    return LiveStatus(target, present=True, sessions=live.sessions)


def delete_target(
    session: Session, settings: Settings, target_id: str, *, force: bool = False
) -> None:
    """Remove from the backend, then the DB; 409 while initiators are connected unless ``force``.

    With ``force`` an unreachable backend does not block the delete: the row
    goes, and the reconciler removes the (then stray) target once it answers.
    """
    target = get_target(session, target_id)
    with backend_lock:
        try:
            manager.backend(settings).delete_target(target.iqn, force=force)
        except TargetNotFound:
            pass
        except BackendUnavailable:
            if not force:
                raise
        session.delete(target)
        session.commit()


def restart_target(
    session: Session, settings: Settings, target_id: str, *, force: bool = False
) -> Target:
    """Delete and re-create the target in the backend (logs initiators out with ``force``)."""
    target = get_target(session, target_id)
    with backend_lock:
        manager.ensure_tgtd(settings)
        backend = manager.backend(settings)
        with contextlib.suppress(TargetNotFound):
            backend.delete_target(target.iqn, force=force)
        try:
            apply(backend, target, chap_of(settings, target))
        except TargetError as exc:
            target.status = TargetStatus.ERROR
            target.error = exc.message
            session.commit()
            raise
        target.status = TargetStatus.ACTIVE
        target.error = None
        session.commit()
    return target


def image_usage(session: Session, image_id: str) -> str | None:
    """The images domain's usage check: an image served by a target cannot be deleted."""
    iqns = list(session.scalars(select(Target.iqn).where(Target.image_id == image_id)))
    if not iqns:
        return None
    return f"it is served by iSCSI target {', '.join(iqns)}; delete the target first"
