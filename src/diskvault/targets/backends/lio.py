"""The LIO backend: the kernel target, driven through the rtslib-fb Python API.

LIO needs configfs (``/sys/kernel/config/target``); constructing the backend
without it raises :class:`BackendUnavailable`. rtslib is imported lazily so
hosts that only use tgt do not need it.

Each target gets one TPG (tag 1). An open ACL (no initiator named) turns on
generated node ACLs, with CHAP set on the TPG; a named initiator gets a
NodeACL with every TPG LUN mapped, with CHAP set on the ACL. LIO switches
authentication per TPG, so once one ACL of a target uses CHAP, all must.

configfs writes are synchronous and can block (a target with stuck sessions),
so each call runs in a worker thread and gives up after ``timeout``. The
thread cannot be killed and finishes on its own.
"""

from __future__ import annotations

import importlib
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

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
    TargetBusy,
    TargetError,
    TargetExists,
    TargetNotFound,
)
from diskvault.targets.iqn import format_portal, validate_iqn, validate_portal

CONFIGFS_TARGET = Path("/sys/kernel/config/target")
SAVE_FILE = "/etc/target/saveconfig.json"
TPG_TAG = 1

T = TypeVar("T")


class LioBackend:
    name = "lio"

    def __init__(
        self,
        timeout: float = 10.0,
        configfs: Path = CONFIGFS_TARGET,
        save_file: str = SAVE_FILE,
    ) -> None:
        if not configfs.is_dir():
            raise BackendUnavailable(
                f"LIO needs configfs ({configfs}); use the tgt backend", backend="lio"
            )
        try:
            self._rts: Any = importlib.import_module("rtslib_fb")
        except ImportError as exc:
            raise BackendUnavailable(
                "the rtslib-fb package is missing (pip install rtslib-fb)", backend="lio"
            ) from exc
        self.timeout = timeout
        self.save_file = save_file

    def _call(self, action: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` in a thread; map rtslib and OS errors to TargetError."""
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["value"] = fn()
            except BaseException as exc:
                box["error"] = exc

        worker = threading.Thread(target=target, name=f"lio: {action}", daemon=True)
        worker.start()
        worker.join(self.timeout)
        if worker.is_alive():
            raise TargetError(f"{action}: configfs did not answer within {self.timeout:.0f}s")
        error = box.get("error")
        if isinstance(error, TargetError):
            raise error
        if isinstance(error, self._rts.RTSLibError | OSError):
            raise TargetError(f"{action}: {error}") from error
        if error is not None:
            raise error
        return box["value"]

    def _fabric(self) -> Any:
        return self._rts.FabricModule("iscsi")

    def _target(self, iqn: str) -> Any:
        for target in self._fabric().targets:
            if target.wwn == iqn:
                return target
        raise TargetNotFound(iqn=iqn)

    def _tpg(self, iqn: str) -> Any:
        return self._rts.TPG(self._target(iqn), TPG_TAG, mode="lookup")

    def create_backstore(self, name: str, path: str) -> Backstore:
        backstore = describe_backstore(name, path)
        is_file = stat.S_ISREG(os.stat(path).st_mode)

        def create() -> Backstore:
            for so in self._rts.RTSRoot().storage_objects:
                if so.name == name and so.plugin == "fileio":
                    if so.udev_path == path:
                        return backstore
                    raise TargetExists(what="backstore", name=name)
            size = backstore.size if is_file else None
            self._rts.FileIOStorageObject(name, dev=path, size=size)
            return backstore

        return self._call(f"creating backstore {name}", create)

    def create_target(self, iqn: str) -> TargetInfo:
        validate_iqn(iqn)

        def create() -> TargetInfo:
            if any(t.wwn == iqn for t in self._fabric().targets):
                raise TargetExists(what="target", name=iqn)
            target = self._rts.Target(self._fabric(), iqn, mode="create")
            tpg = self._rts.TPG(target, TPG_TAG, mode="create")
            tpg.set_attribute("authentication", "0")
            return TargetInfo(iqn=iqn)

        return self._call(f"creating target {iqn}", create)

    def create_lun(self, iqn: str, lun: int, backstore: Backstore) -> None:
        def create() -> None:
            tpg = self._tpg(iqn)
            if any(existing.lun == lun for existing in tpg.luns):
                raise TargetExists(what=f"LUN {lun} of target", name=iqn)
            so = self._rts.FileIOStorageObject(backstore.name)
            tpg_lun = self._rts.LUN(tpg, lun, so)
            for acl in tpg.node_acls:
                self._rts.MappedLUN(acl, lun, tpg_lun)

        self._call(f"adding LUN {lun} ({backstore.path}) to {iqn}", create)

    def create_acl(self, iqn: str, initiator_iqn: str | None, chap: Chap | None) -> None:
        if initiator_iqn is not None:
            validate_iqn(initiator_iqn)

        def create() -> None:
            tpg = self._tpg(iqn)
            if initiator_iqn is None:
                tpg.set_attribute("generate_node_acls", "1")
                tpg.set_attribute("cache_dynamic_acls", "1")
                tpg.set_attribute("demo_mode_write_protect", "0")
                holder = tpg
            else:
                holder = self._rts.NodeACL(tpg, initiator_iqn, mode="any")
                mapped = {m.mapped_lun for m in holder.mapped_luns}
                for tpg_lun in tpg.luns:
                    if tpg_lun.lun not in mapped:
                        self._rts.MappedLUN(holder, tpg_lun.lun, tpg_lun)
            if chap is not None:
                holder.chap_userid = chap.user
                holder.chap_password = chap.secret
                if chap.mutual_user is not None:
                    holder.chap_mutual_userid = chap.mutual_user
                    holder.chap_mutual_password = chap.mutual_secret
                tpg.set_attribute("authentication", "1")

        self._call(f"adding an ACL to {iqn}", create)

    def enable_portal(self, iqn: str, ip: str, port: int) -> None:
        validate_portal(format_portal(ip, port))

        def enable() -> None:
            tpg = self._tpg(iqn)
            self._rts.NetworkPortal(tpg, ip, port, mode="any")
            tpg.enable = True

        self._call(f"enabling portal {format_portal(ip, port)} on {iqn}", enable)

    def delete_target(self, iqn: str, force: bool = False) -> None:
        def delete() -> None:
            target = self._target(iqn)
            tpg = self._rts.TPG(target, TPG_TAG, mode="lookup")
            sessions = _sessions(tpg)
            if sessions and not force:
                raise TargetBusy(iqn=iqn, initiators=", ".join(s.initiator for s in sessions))
            storage_objects = [tpg_lun.storage_object for tpg_lun in tpg.luns]
            target.delete()
            for so in storage_objects:
                if not list(so.attached_luns):
                    so.delete()

        self._call(f"deleting target {iqn}", delete)

    def list_targets(self) -> list[TargetInfo]:
        return self._call(
            "listing targets",
            lambda: [_info(t.wwn, next(iter(t.tpgs))) for t in self._fabric().targets],
        )

    def get_target_status(self, iqn: str) -> TargetStatus:
        return self._call(
            f"reading the status of {iqn}",
            lambda: TargetStatus(iqn=iqn, sessions=_sessions(self._tpg(iqn))),
        )

    def save_config(self) -> None:
        self._call(
            f"saving to {self.save_file}",
            lambda: self._rts.RTSRoot().save_to_file(self.save_file),
        )


def _sessions(tpg: Any) -> list[Session]:
    sessions = []
    for acl in tpg.node_acls:
        info = acl.session
        if info:
            addresses = [c["address"] for c in info.get("connections", []) if "address" in c]
            sessions.append(Session(acl.node_wwn, addresses, info.get("id")))
    # Initiators logged in through generated ACLs appear only here, without addresses.
    dynamic = Path(tpg.path) / "dynamic_sessions"
    if dynamic.exists():
        for name in dynamic.read_text().split():
            sessions.append(Session(name.strip("\x00")))
    return sessions


def _info(iqn: str, tpg: Any) -> TargetInfo:
    acls = list(tpg.node_acls)
    open_access = tpg.get_attribute("generate_node_acls") == "1"
    holders = [tpg] if open_access else acls
    mutual = [h.chap_mutual_userid for h in holders if h.chap_mutual_userid]
    return TargetInfo(
        iqn=iqn,
        luns=[LunInfo(lun.lun, lun.storage_object.udev_path) for lun in tpg.luns],
        initiators=[acl.node_wwn for acl in acls],
        open_access=open_access,
        chap_users=[h.chap_userid for h in holders if h.chap_userid],
        mutual_chap_user=mutual[0] if mutual else None,
        portals=[format_portal(np.ip_address, np.port) for np in tpg.network_portals],
    )
