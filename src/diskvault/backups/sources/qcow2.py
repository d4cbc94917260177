"""qcow2 images at rest, and the bitmap session shared with the ``qmp`` kind.

Change tracking is a persistent dirty bitmap stored in the qcow2 itself, one per
restore point (``dv-<backup id>``). A run adds the new bitmap and starts
``blockdev-backup`` in one transaction, reading the previous bitmap with
``bitmap-mode=never``: QEMU never clears it, and diskvault drops it only once
the new point is recorded. A failed, cancelled or killed run therefore leaves
the previous bitmap covering every change since the last successful backup.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

from diskvault.backups.errors import SourceUnavailable
from diskvault.backups.sources.base import (
    MARKER_PREFIX,
    Copied,
    Kind,
    PathDisks,
    Plan,
    Previous,
    RunOptions,
    create_target,
    tracking_name,
)
from diskvault.backups.sources.daemon import (
    JOB_PREFIX,
    TARGET_PREFIX,
    TargetNode,
    open_target,
    start_daemon,
)
from diskvault.tools.qmp_block import BlockClient, backup_action, bitmap_add_action
from diskvault.tools.qsd import QsdError

# A full reads the whole image in order: copy_file_range between the files (QEMU
# falls back to read/write where it cannot, e.g. an NBD source) in big chunks is 2-3x
# faster than the default. An incremental reads scattered clusters, where the page
# cache reads ahead of each splice and doubles the bytes read: plain read/write is
# about 15% faster there.
FAST_COPY = {"use-copy-range": True, "max-chunk": 64 * 1024 * 1024}
POLL = 0.02


def common_reason(previous: Previous | None, size: int) -> str | None:
    """Why no incremental is possible whatever the change tracking says."""
    if previous is None:
        return "no earlier restore point in this repository to build on"
    if previous.virtual_size != size:
        return f"the disk was resized from {previous.virtual_size} to {size} bytes"
    if not previous.image.is_file():
        return f"the file of restore point {previous.backup_id} is missing"
    return None


class BitmapSession:
    """Backups of one block node through QMP (our QSD, or a running QEMU's monitor)."""

    def __init__(
        self, client: BlockClient, node: str, opts: RunOptions, *, source: str, own: bool
    ) -> None:
        self.client = client
        self.own = own  # our QSD: its QEMU version is known to take x-perf
        self.node = node
        self.opts = opts
        self.source = source
        self.persistent = True
        self._new: str | None = None
        self._target: TargetNode | None = None
        self._committed = False

    def plan(self, want: Kind, previous: Previous | None) -> Plan:
        node = self.client.query_node(self.node)
        size = int(node["image"]["virtual-size"])
        if want == "full":
            return Plan("full", size)
        bitmaps = node.get("dirty-bitmaps", [])
        reason = common_reason(previous, size) or self._bitmap_problem(previous, bitmaps)
        return Plan("full", size, reason) if reason else Plan("incremental", size)

    def _bitmap_problem(
        self, previous: Previous | None, bitmaps: list[dict[str, Any]]
    ) -> str | None:
        assert previous is not None
        name = previous.tracking.get("bitmap")
        if previous.tracking.get("kind") != "bitmap" or not name:
            return f"restore point {previous.backup_id} has no dirty bitmap on record"
        found = {b["name"]: b for b in bitmaps}
        bitmap = found.get(name)
        if bitmap is None:
            return (
                f"dirty bitmap {name} recorded by restore point {previous.backup_id} is missing "
                "from the source (removed, the image replaced, or written by a tool that drops "
                "bitmaps)"
            )
        if bitmap.get("inconsistent"):
            return f"dirty bitmap {name} is inconsistent: its writer stopped without saving it"
        if not bitmap.get("recording", True):
            return f"dirty bitmap {name} is disabled, so it missed writes"
        return None

    def copy(self, target: Path, plan: Plan, previous: Previous | None) -> Copied:
        short = self.opts.backup_id[:12]
        node, job = f"{TARGET_PREFIX}{short}", f"{JOB_PREFIX}{short}"
        create_target(target, plan, previous, self.opts)
        incremental = previous if plan.backup_type == "incremental" else None
        storage = self.opts.storage
        self._target = open_target(self.client, node, target, incremental, storage)
        new = tracking_name(self.opts.backup_id)
        compress = storage.compression is not None
        if plan.backup_type == "incremental":
            assert previous is not None
            backup = backup_action(
                job,
                self.node,
                node,
                sync="bitmap",
                bitmap=previous.tracking["bitmap"],
                bitmap_mode="never",
                speed=self.opts.speed,
                compress=compress,
            )
        else:
            backup = backup_action(
                job, self.node, node, sync="full", speed=self.opts.speed, compress=compress
            )
        if self.own and plan.backup_type == "full":
            backup["data"]["x-perf"] = FAST_COPY
        self._start(new, backup)
        final = self.client.wait_job(
            job, progress=self.opts.progress, should_cancel=self.opts.should_cancel, poll=POLL
        )
        self._detach()
        moved = int(final.get("total-progress", 0))
        return Copied({"kind": "bitmap", "bitmap": new}, moved, change_id=new, bitmap=new)

    def _start(self, bitmap: str, backup: dict[str, Any]) -> None:
        try:
            self.client.transaction([bitmap_add_action(self.node, bitmap), backup])
        except QsdError as exc:
            # A running VM's raw disk cannot store bitmaps: track in memory until it stops.
            if "persistent" not in exc.message.lower():
                raise
            self.persistent = False
            self.client.transaction(
                [bitmap_add_action(self.node, bitmap, persistent=False), backup]
            )
        self._new = bitmap

    def _detach(self) -> None:
        if self._target is not None:
            target, self._target = self._target, None
            target.close()

    def commit(self, keep: Iterable[str]) -> None:
        self._committed = True
        wanted = {*keep, self._new}
        for bitmap in self.client.query_bitmaps(self.node):
            if bitmap["name"].startswith(MARKER_PREFIX) and bitmap["name"] not in wanted:
                with contextlib.suppress(QsdError):
                    self.client.bitmap_remove(self.node, bitmap["name"])

    def close(self) -> None:
        try:
            if not self._committed and self._new is not None:
                with contextlib.suppress(QsdError):
                    self.client.bitmap_remove(self.node, self._new)
            with contextlib.suppress(QsdError):
                self._detach()
        finally:
            self.client.close()


class Qcow2Source(PathDisks):
    """``{"disks": ["/vm/disk0.qcow2", ...]}`` (or ``"path"``): images not open elsewhere."""

    kind: ClassVar[str] = "qcow2"

    def open_disk(self, index: int, opts: RunOptions) -> BitmapSession:
        path = self.paths[index]
        if not path.is_file():
            raise SourceUnavailable(source=self.name, disk=index, detail=f"{path} does not exist")
        server = start_daemon(opts.workdir, opts.settings, f"backup-{self.name}-{index}")
        try:
            server.blockdev_add("src", "qcow2", filename=path)
        except QsdError as exc:
            server.stop()
            detail = exc.stderr
            if "lock" in detail:
                detail += (
                    "; the image is open in a running VM: back it up through its QMP socket "
                    "(kind qmp) or libvirt instead"
                )
            raise SourceUnavailable(source=self.name, disk=index, detail=detail) from exc
        return BitmapSession(server, "src", opts, source=self.name, own=True)
