"""The tgt backend: tgtd driven through tgtadm.

How tgt differs from LIO, and what this backend does about it:
- Targets have numeric tids. The tid is not stored anywhere; each call reads
  ``show target`` and finds the target by IQN.
- LUN 0 is tgt's controller, so disks start at LUN 1 and LUN 0 is refused.
- ACLs: tgt lets an initiator in when its address matches an address ACL *or*
  its name matches a name ACL. An open target is bound to address ``ALL``;
  naming an initiator removes ``ALL``, or the name ACL would restrict nothing.
- CHAP accounts are global to tgtd and bound per target (not per initiator).
  A user bound to another target is refused rather than silently re-keyed;
  accounts only used by a deleted target are removed with it.
- Portals are global to tgtd (``--iscsi portal=`` at start), so
  :meth:`TgtBackend.enable_portal` only checks that tgtd serves the portal.
- tgtd has no saved configuration of its own; :meth:`TgtBackend.save_config`
  is a no-op because diskvault's DB is the source of truth and the reconciler
  re-creates targets after tgtd restarts.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterator

from diskvault.targets.backends.base import (
    Backstore,
    Chap,
    LunInfo,
    Session,
    TargetInfo,
    TargetStatus,
    describe_backstore,
)
from diskvault.targets.errors import (
    BackendUnavailable,
    ChapUserInUse,
    InvalidChap,
    InvalidLun,
    InvalidPortal,
    TargetBusy,
    TargetError,
    TargetExists,
    TargetNotFound,
)
from diskvault.targets.iqn import format_portal, validate_iqn, validate_portal
from diskvault.tools.process import ToolError, ToolMissing
from diskvault.tools.tgt import (
    TGTADM,
    Tgtadm,
    TgtAlreadyExists,
    TgtdUnreachable,
    TgtNoSuchObject,
    TgtStillActive,
    TgtTarget,
)

MAX_LUN = 255
_TID_ATTEMPTS = 5


@contextlib.contextmanager
def _tool_errors(action: str, control_port: int) -> Iterator[None]:
    """Turn tgtadm failures not handled at the call site into TargetError."""
    try:
        yield
    except (TgtdUnreachable, ToolMissing) as exc:
        raise BackendUnavailable(
            f"no tgtd answers on control port {control_port}: {exc.stderr or exc.message}",
            backend="tgt",
        ) from exc
    except ToolError as exc:
        raise TargetError(f"{action}: {exc.message}") from exc


class TgtBackend:
    name = "tgt"

    def __init__(self, control_port: int = 0, tgtadm: str = TGTADM, timeout: float = 10.0) -> None:
        self.control_port = control_port
        self.tgtadm = Tgtadm(control_port, binary=tgtadm, timeout=timeout)

    def _errors(self, action: str) -> contextlib.AbstractContextManager[None]:
        return _tool_errors(action, self.control_port)

    def _targets(self) -> list[TgtTarget]:
        with self._errors("listing targets"):
            return self.tgtadm.show_targets()

    def _find(self, iqn: str) -> TgtTarget:
        for target in self._targets():
            if target.iqn == iqn:
                return target
        raise TargetNotFound(iqn=iqn)

    def create_backstore(self, name: str, path: str) -> Backstore:
        """tgt has no backstore objects: check the file; LUNs open it by path."""
        return describe_backstore(name, path)

    def create_target(self, iqn: str) -> TargetInfo:
        validate_iqn(iqn)
        with self._errors(f"creating target {iqn}"):
            for _ in range(_TID_ATTEMPTS):
                targets = self._targets()
                if any(t.iqn == iqn for t in targets):
                    raise TargetExists(what="target", name=iqn)
                tid = max((t.tid for t in targets), default=0) + 1
                try:
                    self.tgtadm.new_target(tid, iqn)
                except TgtAlreadyExists:
                    continue  # another caller took the tid or the IQN; look again
                return TargetInfo(iqn=iqn, tid=tid, portals=self.tgtadm.show_portals())
        raise TargetError(f"creating target {iqn}: no free tid after {_TID_ATTEMPTS} attempts")

    def create_lun(self, iqn: str, lun: int, backstore: Backstore) -> None:
        if lun == 0:
            raise InvalidLun("tgt reserves LUN 0 for its controller; disks start at LUN 1", lun=0)
        if not 1 <= lun <= MAX_LUN:
            raise InvalidLun(f"LUNs are 1-{MAX_LUN}", lun=lun)
        target = self._find(iqn)
        with self._errors(f"adding LUN {lun} ({backstore.path}) to {iqn}"):
            try:
                self.tgtadm.new_lun(target.tid, lun, backstore.path)
            except TgtAlreadyExists:
                raise TargetExists(what=f"LUN {lun} of target", name=iqn) from None

    def create_acl(self, iqn: str, initiator_iqn: str | None, chap: Chap | None) -> None:
        if initiator_iqn is not None:
            validate_iqn(initiator_iqn)
        if chap is not None and chap.mutual_user == chap.user:
            raise InvalidChap("tgt needs different user names for CHAP and mutual CHAP")
        target = self._find(iqn)
        with self._errors(f"adding an ACL to {iqn}"):
            if initiator_iqn is None:
                with contextlib.suppress(TgtAlreadyExists):
                    self.tgtadm.bind_address(target.tid, "ALL")
            else:
                with contextlib.suppress(TgtAlreadyExists):
                    self.tgtadm.bind_initiator_name(target.tid, initiator_iqn)
                if "ALL" in target.acls:
                    self.tgtadm.bind_address(target.tid, "ALL", unbind=True)
            if chap is not None:
                self._bind_account(target, chap.user, chap.secret, outgoing=False)
                if chap.mutual_user is not None and chap.mutual_secret is not None:
                    self._bind_account(target, chap.mutual_user, chap.mutual_secret, outgoing=True)

    def _bind_account(self, target: TgtTarget, user: str, secret: str, outgoing: bool) -> None:
        others = [t.iqn for t in self._targets() if t.tid != target.tid and user in _accounts(t)]
        if others:
            raise ChapUserInUse(user=user, targets=", ".join(others))
        if user in self.tgtadm.show_accounts():
            # Only this target uses it: re-create it so the secret is the one asked for.
            self.tgtadm.delete_account(user)
        self.tgtadm.new_account(user, secret)
        if outgoing and target.outgoing_account not in (None, user):
            self.tgtadm.bind_account(target.tid, target.outgoing_account, True, unbind=True)
        self.tgtadm.bind_account(target.tid, user, outgoing=outgoing)

    def enable_portal(self, iqn: str, ip: str, port: int) -> None:
        wanted = format_portal(ip, port)
        validate_portal(wanted)
        self._find(iqn)
        with self._errors("listing portals"):
            portals = self.tgtadm.show_portals()
        wildcard = "[::]" if ipaddress.ip_address(ip).version == 6 else "0.0.0.0"  # noqa: S104
        if wanted not in portals and f"{wildcard}:{port}" not in portals:
            raise InvalidPortal(
                f"tgtd serves the same portals for every target and listens on "
                f"{', '.join(portals) or 'nothing'}; start tgtd with --iscsi portal={wanted}",
                portal=wanted,
            )

    def delete_target(self, iqn: str, force: bool = False) -> None:
        target = self._find(iqn)
        if target.nexuses and not force:
            raise TargetBusy(iqn=iqn, initiators=", ".join(n.initiator for n in target.nexuses))
        with self._errors(f"deleting target {iqn}"):
            try:
                self.tgtadm.delete_target(target.tid, force=force)
            except TgtStillActive:
                raise TargetBusy(iqn=iqn, initiators="an initiator that just logged in") from None
            except TgtNoSuchObject:
                return  # deleted concurrently: the outcome the caller wanted
            still_bound = {user for t in self._targets() for user in _accounts(t)}
            for user in set(_accounts(target)) - still_bound:
                with contextlib.suppress(TgtNoSuchObject):
                    self.tgtadm.delete_account(user)

    def list_targets(self) -> list[TargetInfo]:
        targets = self._targets()
        with self._errors("listing portals"):
            portals = self.tgtadm.show_portals()
        return [_info(t, portals) for t in targets]

    def get_target_status(self, iqn: str) -> TargetStatus:
        target = self._find(iqn)
        sessions = [Session(n.initiator, list(n.addresses), n.nexus_id) for n in target.nexuses]
        return TargetStatus(iqn=iqn, sessions=sessions)

    def save_config(self) -> None:
        """No-op: tgtd keeps no config; the reconciler re-creates targets from the DB."""


def _accounts(target: TgtTarget) -> list[str]:
    extra = [target.outgoing_account] if target.outgoing_account else []
    return [*target.accounts, *extra]


def _info(target: TgtTarget, portals: list[str]) -> TargetInfo:
    return TargetInfo(
        iqn=target.iqn,
        luns=[
            LunInfo(lun.lun, lun.backing_path) for lun in target.luns if lun.type != "controller"
        ],
        initiators=[acl for acl in target.acls if acl.startswith(("iqn.", "eui.", "naa."))],
        open_access="ALL" in target.acls,
        chap_users=list(target.accounts),
        mutual_chap_user=target.outgoing_account,
        portals=list(portals),
        tid=target.tid,
    )
