"""A libvirt domain, through libvirt's backup API with checkpoints, in pull mode.

Each restore point creates checkpoint ``dv-<backup id>`` for its disk and asks
libvirt for a pull-mode backup: QEMU exports a point-in-time view of the disk
over NBD on a unix socket, and an incremental's export also offers the changes
since the previous point's checkpoint as ``qemu:dirty-bitmap:backup-<disk>``.
diskvault then reads that export the way it reads any NBD source, so the
restore point is written by diskvault's own QEMU with the repository's
encryption and compression, and the repository never has to be reachable by
the domain's QEMU user. Only the socket and the scratch file (where QEMU keeps
the old contents of blocks the guest overwrites during the backup) live in a
work directory handed to that user.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar
from xml.sax.saxutils import escape, quoteattr

import libvirt

from diskvault.backups.errors import BackupError, InvalidSource, SourceUnavailable
from diskvault.backups.sources.base import (
    MARKER_PREFIX,
    Copied,
    Kind,
    Plan,
    Previous,
    RunOptions,
    tracking_name,
)
from diskvault.backups.sources.nbd import NbdSession
from diskvault.backups.sources.qcow2 import common_reason
from diskvault.tools import nbd

JOB_END_TIMEOUT = 30.0
SHARE_ROOT = "/var/tmp"
POLL = 0.1


def _quiet(_ctx: object, _err: object) -> None:
    """libvirt prints every error to stderr by default; diskvault reports them itself."""


libvirt.registerErrorHandler(_quiet, None)


def _message(exc: libvirt.libvirtError) -> str:
    return str(exc.get_error_message() or exc)


def _backup_xml(disks: list[str], chosen: str, socket: Path, scratch: Path, since: str) -> str:
    rows = [f"<disk name={quoteattr(d)} backup='no'/>" for d in disks if d != chosen]
    rows.append(
        f"<disk name={quoteattr(chosen)} backup='yes' type='file'>"
        f"<scratch file={quoteattr(str(scratch))}/></disk>"
    )
    incremental = f"<incremental>{escape(since)}</incremental>" if since else ""
    return (
        f"<domainbackup mode='pull'>{incremental}"
        f"<server transport='unix' socket={quoteattr(str(socket))}/>"
        f"<disks>{''.join(rows)}</disks></domainbackup>"
    )


def _checkpoint_xml(disks: list[str], chosen: str, name: str) -> str:
    rows = "".join(
        f"<disk name={quoteattr(d)} checkpoint={'bitmap' if d == chosen else 'no'!r}/>"
        for d in disks
    )
    return f"<domaincheckpoint><name>{escape(name)}</name><disks>{rows}</disks></domaincheckpoint>"


def _parse(dom: libvirt.virDomain) -> ET.Element:
    # The live XML comes from libvirtd itself, which diskvault's user already trusts as root.
    return ET.fromstring(dom.XMLDesc(0))  # noqa: S314


def _dac_owner(dom: libvirt.virDomain) -> tuple[int, int] | None:
    """The uid/gid the domain's QEMU runs as (its DAC label), or None when root."""
    root = _parse(dom)
    for label in root.iter("seclabel"):
        text = label.findtext("label") or ""
        if label.get("model") == "dac" and ":" in text:
            uid, gid = (int(part.lstrip("+")) for part in text.split(":", 1))
            return uid, gid
    return None


class LibvirtSession:
    def __init__(self, source: LibvirtSource, index: int, opts: RunOptions) -> None:
        self.source, self.index, self.opts = source, index, opts
        self.dom = source.domain()
        self.disk = source.disks()[index]
        self._new: str | None = None
        self._committed = False

    def _unavailable(self, detail: str) -> SourceUnavailable:
        return SourceUnavailable(source=self.source.name, disk=self.index, detail=detail)

    def _checkpoints(self) -> set[str]:
        return {c.getName() for c in self.dom.listAllCheckpoints()}

    def plan(self, want: Kind, previous: Previous | None) -> Plan:
        try:
            size = int(self.dom.blockInfo(self.disk)[0])
            checkpoints = self._checkpoints()
        except libvirt.libvirtError as exc:
            raise self._unavailable(_message(exc)) from exc
        if want == "full":
            return Plan("full", size)
        reason = common_reason(previous, size)
        if reason is None:
            assert previous is not None
            name = previous.tracking.get("checkpoint")
            if previous.tracking.get("kind") != "libvirt-checkpoint" or not name:
                reason = f"restore point {previous.backup_id} has no checkpoint on record"
            elif name not in checkpoints:
                reason = (
                    f"checkpoint {name} recorded by restore point {previous.backup_id} is "
                    f"missing from domain {self.source.domain_name} (deleted, or the domain "
                    "was redefined)"
                )
        return Plan("full", size, reason) if reason else Plan("incremental", size)

    def copy(self, target: Path, plan: Plan, previous: Previous | None) -> Copied:
        since = ""
        if plan.backup_type == "incremental":
            assert previous is not None
            since = str(previous.tracking["checkpoint"])
        self._end_stale_job()
        share = self._share_dir()
        socket, new = share / "nbd.sock", tracking_name(self.opts.backup_id)
        disks = self.source.disks()
        try:
            self.dom.backupBegin(
                _backup_xml(disks, self.disk, socket, share / "scratch.qcow2", since),
                _checkpoint_xml(disks, self.disk, new),
            )
        except libvirt.libvirtError as exc:
            shutil.rmtree(share, ignore_errors=True)
            raise self._unavailable(_message(exc)) from exc
        self._new = new
        url = nbd.unix_url(socket, self.disk)
        reader = NbdSession(
            self.source.name, self.index, url, f"backup-{self.disk}" if since else None, self.opts
        )
        try:
            problem = reader.read_bitmap() if since else None
            if problem:
                raise BackupError(f"libvirt's export of {self.disk} is incomplete: {problem}")
            moved = reader.copy(target, plan, previous).bytes_transferred
        finally:
            reader.close()
            self._end_job()
            shutil.rmtree(share, ignore_errors=True)
        return Copied({"kind": "libvirt-checkpoint", "checkpoint": new}, moved, change_id=new)

    def _share_dir(self) -> Path:
        """The socket and scratch directory, owned by the domain's QEMU user alone.

        It sits in the world-traversable SHARE_ROOT, so no directory of diskvault's
        has to be opened to that user.
        """
        prefix = f"diskvault-{self.opts.backup_id[:12]}-"
        share = Path(tempfile.mkdtemp(prefix=prefix, dir=SHARE_ROOT))
        owner = _dac_owner(self.dom)
        if owner is not None:
            os.chown(share, *owner)
        return share

    def _end_stale_job(self) -> None:
        """A worker killed mid-backup leaves its pull job running, which would refuse the
        next one. Only a job whose socket is one of diskvault's is ended."""
        try:
            running = self.dom.backupGetXMLDesc()
        except libvirt.libvirtError:
            return  # no backup job
        server = ET.fromstring(running).find("server")  # noqa: S314 (libvirtd's own XML)
        socket = Path(server.get("socket", "")) if server is not None else Path()
        if socket.parent.name.startswith("diskvault-") and str(socket.parent.parent) == SHARE_ROOT:
            self._end_job()
            shutil.rmtree(socket.parent, ignore_errors=True)

    def _end_job(self) -> None:
        """A pull-mode backup lasts until it is aborted; wait until libvirt says it ended."""
        with contextlib.suppress(libvirt.libvirtError):
            self.dom.abortJob()
        deadline = time.monotonic() + JOB_END_TIMEOUT
        while time.monotonic() < deadline:
            try:
                if self.dom.jobInfo()[0] == libvirt.VIR_DOMAIN_JOB_NONE:
                    return
            except libvirt.libvirtError:
                return
            time.sleep(POLL)

    def commit(self, keep: Iterable[str]) -> None:
        self._committed = True
        with contextlib.suppress(libvirt.libvirtError):
            ours = {n for n in self._checkpoints() if n.startswith(MARKER_PREFIX)}
            self._drop(ours - {*keep, self._new})

    def _drop(self, names: set[str]) -> None:
        for name in sorted(names):
            with contextlib.suppress(libvirt.libvirtError):
                self.dom.checkpointLookupByName(name).delete()

    def close(self) -> None:
        if not self._committed and self._new is not None:
            self._drop({self._new})


class LibvirtSource:
    """``{"domain": "vm1", "uri": "qemu:///system", "disks": ["vda"]}`` (disks: default all)."""

    kind: ClassVar[str] = "libvirt"

    def __init__(self, name: str, config: dict[str, Any]) -> None:
        self.name = name
        self.domain_name = str(config["domain"])
        self.uri = str(config.get("uri") or "qemu:///system")
        self._disks: list[str] | None = list(config.get("disks") or []) or None
        self._dom: libvirt.virDomain | None = None

    @classmethod
    def validate(cls, config: dict[str, Any]) -> dict[str, Any]:
        domain = str(config.get("domain") or "")
        if not domain:
            raise InvalidSource(kind=cls.kind, detail="give 'domain': the libvirt domain name")
        disks = [str(d) for d in config.get("disks") or []]
        return {"domain": domain, "uri": config.get("uri") or "qemu:///system", "disks": disks}

    @classmethod
    def check(cls, config: dict[str, Any]) -> None:
        """The domain is looked up through libvirt at backup time (it may be defined later)."""

    def domain(self) -> libvirt.virDomain:
        if self._dom is None:
            try:
                self._dom = libvirt.open(self.uri).lookupByName(self.domain_name)
            except libvirt.libvirtError as exc:
                raise SourceUnavailable(source=self.name, disk="*", detail=_message(exc)) from exc
        return self._dom

    def disks(self) -> list[str]:
        if self._disks is None:
            root = _parse(self.domain())
            self._disks = [
                str(disk.find("target").get("dev"))  # type: ignore[union-attr]
                for disk in root.iter("disk")
                if disk.get("device", "disk") == "disk" and disk.find("target") is not None
            ]
        return self._disks

    def disk_count(self) -> int:
        return len(self.disks())

    def open_disk(self, index: int, opts: RunOptions) -> LibvirtSession:
        return LibvirtSession(self, index, opts)
