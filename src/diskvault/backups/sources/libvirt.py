"""A libvirt domain, through libvirt's backup API with checkpoints (push mode).

Each restore point creates checkpoint ``dv-<backup id>`` for its disk;
an incremental asks for the changes since the previous point's checkpoint.
libvirt writes the target itself (an incremental's backing file is the live
disk), so diskvault then points the backing at the previous restore point
with an unsafe rebase: every unwritten cluster is unchanged since then.
The repository must be reachable by the domain's QEMU user.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar
from xml.sax.saxutils import quoteattr

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
from diskvault.backups.sources.qcow2 import common_reason
from diskvault.tools import qemu_img
from diskvault.tools.process import Cancelled, ToolError, run

VIRSH = "virsh"
TIMEOUT = 60.0
POLL = 0.1
JOB_NONE, JOB_COMPLETED = 0, 3


class VirshError(ToolError):
    tool_name = "virsh"


class Virsh:
    def __init__(self, uri: str, binary: str = VIRSH) -> None:
        self.uri, self.binary = uri, binary

    def __call__(self, *args: str, timeout: float = TIMEOUT) -> str:
        cmd = [self.binary, "-c", self.uri, *args]
        return run(cmd, timeout=timeout, error=VirshError).stdout

    def stats(self, domain: str, *extra: str) -> dict[str, str]:
        """``domjobinfo --rawstats`` as a dict (``Job type`` plus the raw fields)."""
        out: dict[str, str] = {}
        for line in self("domjobinfo", domain, "--rawstats", *extra).splitlines():
            key, sep, value = line.partition(":")
            if sep:
                out[key.strip()] = value.strip()
        return out


def _disk_xml(disks: list[str], chosen: str, target: Path | None) -> str:
    rows = []
    for disk in disks:
        if disk != chosen:
            rows.append(
                f"<disk name={quoteattr(disk)} {'backup' if target else 'checkpoint'}='no'/>"
            )
        elif target is not None:
            rows.append(
                f"<disk name={quoteattr(disk)} backup='yes' type='file'>"
                f"<target file={quoteattr(str(target))}/><driver type='qcow2'/></disk>"
            )
        else:
            rows.append(f"<disk name={quoteattr(disk)} checkpoint='bitmap'/>")
    return "<disks>" + "".join(rows) + "</disks>"


class LibvirtSession:
    def __init__(self, source: LibvirtSource, index: int, opts: RunOptions) -> None:
        self.source, self.index, self.opts = source, index, opts
        self.virsh = source.virsh
        self.domain = source.domain
        self.disk = source.disks()[index]
        self._new: str | None = None
        self._committed = False

    def _unavailable(self, detail: str) -> SourceUnavailable:
        return SourceUnavailable(source=self.source.name, disk=self.index, detail=detail)

    def plan(self, want: Kind, previous: Previous | None) -> Plan:
        try:
            info = self.virsh("domblkinfo", self.domain, self.disk)
            checkpoints = set(self.virsh("checkpoint-list", self.domain, "--name").split())
        except VirshError as exc:
            raise self._unavailable(exc.stderr) from exc
        size = int(
            next(
                v
                for k, _, v in (line.partition(":") for line in info.splitlines())
                if k.strip() == "Capacity"
            ).strip()
        )
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
                    f"checkpoint {name} recorded by restore point {previous.backup_id} is missing "
                    f"from domain {self.domain} (deleted, or the domain was redefined)"
                )
        return Plan("full", size, reason) if reason else Plan("incremental", size)

    def copy(self, target: Path, plan: Plan, previous: Previous | None) -> Copied:
        disks = self.source.disks()
        new = tracking_name(self.opts.backup_id)
        incremental = ""
        if plan.backup_type == "incremental":
            assert previous is not None
            incremental = f"<incremental>{previous.tracking['checkpoint']}</incremental>"
        backup_xml = self.opts.workdir / "backup.xml"
        checkpoint_xml = self.opts.workdir / "checkpoint.xml"
        self.opts.workdir.mkdir(parents=True, exist_ok=True)
        backup_xml.write_text(
            f"<domainbackup mode='push'>{incremental}{_disk_xml(disks, self.disk, target)}"
            "</domainbackup>"
        )
        checkpoint_xml.write_text(
            f"<domaincheckpoint><name>{new}</name>{_disk_xml(disks, self.disk, None)}"
            "</domaincheckpoint>"
        )
        self.virsh("backup-begin", self.domain, str(backup_xml), str(checkpoint_xml))
        self._new = new
        moved = self._wait()
        binary = self.opts.settings.QEMU_IMG_PATH
        if plan.backup_type == "incremental":
            assert previous is not None
            qemu_img.rebase(
                target, "qcow2", previous.image.name, "qcow2", unsafe=True, binary=binary
            )
        elif "backing-filename" in qemu_img.info(target, "qcow2", binary=binary):
            qemu_img.rebase(target, "qcow2", None, None, unsafe=True, binary=binary)
        return Copied({"kind": "libvirt-checkpoint", "checkpoint": new}, moved, change_id=new)

    def _wait(self) -> int:
        done = 0
        while True:
            stats = self.virsh.stats(self.domain)
            if int(stats.get("Job type", JOB_NONE)) == JOB_NONE:
                break
            done = int(stats.get("disk_processed", done))
            self.opts.progress(done, int(stats.get("disk_total", 0)))
            if self.opts.should_cancel():
                with contextlib.suppress(VirshError):
                    self.virsh("domjobabort", self.domain)
                raise Cancelled()
            time.sleep(POLL)
        final = self.virsh.stats(self.domain, "--completed")
        if int(final.get("Job type", JOB_NONE)) != JOB_COMPLETED:
            raise BackupError(
                f"libvirt backup of {self.domain}/{self.disk} failed: "
                f"{final.get('errmsg') or final}"
            )
        return int(final.get("disk_total", done))

    def commit(self, keep: Iterable[str]) -> None:
        self._committed = True
        present = set(self.virsh("checkpoint-list", self.domain, "--name").split())
        ours = {n for n in present if n.startswith(MARKER_PREFIX)}
        self._drop(ours - {*keep, self._new})

    def _drop(self, names: set[str]) -> None:
        for name in sorted(names):
            with contextlib.suppress(VirshError):
                self.virsh("checkpoint-delete", self.domain, name)

    def close(self) -> None:
        if not self._committed and self._new is not None:
            with contextlib.suppress(VirshError):
                self._drop({self._new})


class LibvirtSource:
    """``{"domain": "vm1", "uri": "qemu:///system", "disks": ["vda"]}`` (disks: default all)."""

    kind: ClassVar[str] = "libvirt"

    def __init__(self, name: str, config: dict[str, Any]) -> None:
        self.name = name
        self.domain = str(config["domain"])
        self.virsh = Virsh(str(config.get("uri") or "qemu:///system"))
        self._disks: list[str] | None = list(config.get("disks") or []) or None

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

    def disks(self) -> list[str]:
        if self._disks is None:
            try:
                out = self.virsh("domblklist", self.domain, "--details")
            except VirshError as exc:
                raise SourceUnavailable(source=self.name, disk="*", detail=exc.stderr) from exc
            rows = [line.split() for line in out.splitlines()[2:] if line.strip()]
            self._disks = [r[2] for r in rows if len(r) >= 3 and r[1] == "disk"]
        return self._disks

    def disk_count(self) -> int:
        return len(self.disks())

    def open_disk(self, index: int, opts: RunOptions) -> LibvirtSession:
        return LibvirtSession(self, index, opts)
