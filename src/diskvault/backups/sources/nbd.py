"""Any NBD export (``nbd://host:port/name`` or ``nbd+unix:///name?socket=PATH``),
e.g. nbdkit's VDDK plugin for VMware disks.

With ``bitmap`` set and the export offering ``qemu:dirty-bitmap:<bitmap>``, an
incremental copies only the dirty extents. The bitmap belongs to the server and
diskvault never clears it, so it must only grow between backups: an incremental
copies every change since the bitmap was created, a superset of the changes
since the last backup. A bitmap that is missing, was absent at the previous
backup, or shrank (someone cleared it) makes the run a full read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, unquote, urlsplit

from diskvault.backups.errors import InvalidSource, SourceUnavailable
from diskvault.backups.sources.base import (
    Copied,
    Kind,
    Plan,
    Previous,
    RunOptions,
    check_present,
    create_target,
    disk_list,
)
from diskvault.backups.sources.daemon import (
    JOB_PREFIX,
    TARGET_PREFIX,
    open_target,
    start_daemon,
)
from diskvault.backups.sources.pump import copy_extents, fuse_view, target_view
from diskvault.backups.sources.qcow2 import POLL, common_reason
from diskvault.tools import nbd
from diskvault.tools.qsd import QsdError, QsdServer


def blockdev_server(url: str) -> dict[str, Any]:
    """QEMU's ``nbd`` driver options for an NBD URL."""
    parts = urlsplit(url)
    export = unquote(parts.path.lstrip("/"))
    if parts.scheme == "nbd+unix":
        socket = parse_qs(parts.query).get("socket", [""])[0]
        server: dict[str, Any] = {"type": "unix", "path": socket}
    else:
        server = {"type": "inet", "host": parts.hostname or "", "port": str(parts.port or 10809)}
    return {"driver": "nbd", "server": server, "export": export}


class NbdSession:
    def __init__(self, name: str, index: int, url: str, bitmap: str | None, opts: RunOptions):
        self.name, self.index, self.url, self.bitmap, self.opts = name, index, url, bitmap, opts
        self._dirty: list[tuple[int, int]] | None = None
        self._server: QsdServer | None = None

    def _unavailable(self, detail: str) -> SourceUnavailable:
        return SourceUnavailable(source=self.name, disk=self.index, detail=detail)

    def plan(self, want: Kind, previous: Previous | None) -> Plan:
        try:
            size = nbd.export_size(self.url)
        except nbd.NbdError as exc:
            raise self._unavailable(exc.stderr) from exc
        problem = self.read_bitmap()
        if want == "full":
            return Plan("full", size)
        reason = common_reason(previous, size) or problem or self._previous_problem(previous)
        return Plan("full", size, reason) if reason else Plan("incremental", size)

    def read_bitmap(self) -> str | None:
        if not self.bitmap:
            return "the source has no dirty bitmap configured, so every backup reads it all"
        try:
            extents = nbd.dirty_extents(self.url, self.bitmap)
        except nbd.NbdError as exc:
            if "metadata context" not in exc.stderr:
                raise self._unavailable(exc.stderr) from exc
            return f"the export does not offer qemu:dirty-bitmap:{self.bitmap}"
        self._dirty = [(e.offset, e.length) for e in extents]
        return None

    @property
    def dirty_bytes(self) -> int:
        return sum(length for _, length in self._dirty or [])

    def _previous_problem(self, previous: Previous | None) -> str | None:
        assert previous is not None
        rec = previous.tracking
        if rec.get("kind") != "nbd-bitmap" or rec.get("bitmap") != self.bitmap:
            return f"restore point {previous.backup_id} was taken without bitmap {self.bitmap}"
        if self.dirty_bytes < int(rec.get("dirty_bytes", 0)):
            return (
                f"bitmap {self.bitmap} was cleared since restore point {previous.backup_id} "
                f"({rec['dirty_bytes']} dirty bytes then, {self.dirty_bytes} now), so it no "
                "longer covers every change"
            )
        return None

    def copy(self, target: Path, plan: Plan, previous: Previous | None) -> Copied:
        create_target(target, plan, previous, self.opts)
        server = self._server = start_daemon(self.opts.workdir, self.opts.settings, "nbd")
        try:
            server.qmp(
                "blockdev-add",
                {"driver": "raw", "node-name": "src", "read-only": True},
                file=blockdev_server(self.url),
            )
        except QsdError as exc:
            raise self._unavailable(exc.stderr) from exc
        if plan.backup_type == "incremental":
            moved = self._copy_dirty(server, target, previous)
        else:
            moved = self._copy_full(server, target, plan)
        tracking: dict[str, Any] = {"kind": "none"}
        if self._dirty is not None:
            tracking = {
                "kind": "nbd-bitmap",
                "bitmap": self.bitmap,
                "dirty_bytes": self.dirty_bytes,
            }
        change_id = f"{self.bitmap}:{self.dirty_bytes}" if self._dirty is not None else None
        return Copied(tracking, moved, change_id=change_id, bitmap=self.bitmap)

    def _copy_full(self, server: QsdServer, target: Path, plan: Plan) -> int:
        short = self.opts.backup_id[:12]
        node, job = f"{TARGET_PREFIX}{short}", f"{JOB_PREFIX}{short}"
        storage = self.opts.storage
        opened = open_target(server, node, target, None, storage)
        server.blockdev_backup(
            job,
            "src",
            node,
            sync="full",
            speed=self.opts.speed,
            compress=storage.compression is not None,
        )
        server.wait_job(
            job, progress=self.opts.progress, should_cancel=self.opts.should_cancel, poll=POLL
        )
        opened.close()
        return plan.virtual_size

    def _copy_dirty(self, server: QsdServer, target: Path, previous: Previous | None) -> int:
        view = server.workdir / "src.raw"
        short, storage = self.opts.backup_id[:12], self.opts.storage
        with (
            fuse_view(server, "src", view, writable=False) as src,
            target_view(server, target, short, previous, storage) as dst,
        ):
            return copy_extents(
                src,
                dst,
                self._dirty or [],
                total=self.dirty_bytes,
                progress=self.opts.progress,
                should_cancel=self.opts.should_cancel,
            )

    def commit(self, keep: object) -> None:
        return None  # the server owns its bitmap

    def close(self) -> None:
        if self._server is not None:
            self._server.stop()


class NbdSource:
    """``{"disks": [{"url": "nbd+unix:///vm?socket=/run/vm.sock", "bitmap": "b0"}]}``."""

    kind: ClassVar[str] = "nbd"

    def __init__(self, name: str, config: dict[str, Any]) -> None:
        self.name = name
        self.disks = disk_list(config, "url")

    @classmethod
    def validate(cls, config: dict[str, Any]) -> dict[str, Any]:
        raw = config.get("disks") or [{"url": config.get("url"), "bitmap": config.get("bitmap")}]
        disks = disk_list({"disks": raw}, "url")
        out = []
        for disk in disks:
            url = str(disk.get("url") or "")
            scheme = urlsplit(url).scheme
            if scheme not in ("nbd", "nbd+unix"):
                raise InvalidSource(kind=cls.kind, detail=f"{url!r} is not nbd:// or nbd+unix://")
            if scheme == "nbd+unix" and not parse_qs(urlsplit(url).query).get("socket"):
                raise InvalidSource(kind=cls.kind, detail=f"{url!r} has no ?socket=PATH")
            out.append({"url": url, "bitmap": disk.get("bitmap") or None})
        if not out:
            raise InvalidSource(kind=cls.kind, detail="give 'url' or 'disks'")
        return {"disks": out}

    @classmethod
    def check(cls, config: dict[str, Any]) -> None:
        """A unix socket must be there; a TCP export is only reachable at backup time."""
        sockets = [
            parse_qs(urlsplit(d["url"]).query)["socket"][0]
            for d in config["disks"]
            if urlsplit(d["url"]).scheme == "nbd+unix"
        ]
        check_present(cls.kind, sockets, socket=True)

    def disk_count(self) -> int:
        return len(self.disks)

    def open_disk(self, index: int, opts: RunOptions) -> NbdSession:
        disk = self.disks[index]
        return NbdSession(self.name, index, str(disk["url"]), disk.get("bitmap"), opts)
