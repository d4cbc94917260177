"""A running QEMU or qemu-storage-daemon reached through its QMP socket.

That process runs ``blockdev-backup`` itself (push mode) into a target file it
opens by path, so the repository must be reachable from it at the same path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

from diskvault.backups.errors import InvalidSource, SourceUnavailable
from diskvault.backups.sources.base import RunOptions, check_present, disk_list
from diskvault.backups.sources.daemon import clear_leftovers
from diskvault.backups.sources.qcow2 import BitmapSession
from diskvault.tools import qmp_block
from diskvault.tools.qsd import QsdError


class QmpSource:
    """``{"socket": "/run/vm1/qmp.sock", "disks": [{"node": "drive0-format"}]}``."""

    kind: ClassVar[str] = "qmp"

    def __init__(self, name: str, config: dict[str, Any]) -> None:
        self.name = name
        self.socket = Path(config["socket"])
        self.nodes = [str(d["node"]) for d in disk_list(config, "node")]

    @classmethod
    def validate(cls, config: dict[str, Any]) -> dict[str, Any]:
        socket = str(config.get("socket") or "")
        nodes = [str(d.get("node") or "") for d in disk_list(config, "node")]
        if not os.path.isabs(socket):
            raise InvalidSource(kind=cls.kind, detail="'socket' must be an absolute path")
        if not nodes or not all(nodes):
            raise InvalidSource(kind=cls.kind, detail="give 'disks': block node names")
        return {"socket": socket, "disks": [{"node": n} for n in nodes]}

    @classmethod
    def check(cls, config: dict[str, Any]) -> None:
        check_present(cls.kind, [config["socket"]], socket=True)

    def disk_count(self) -> int:
        return len(self.nodes)

    def open_disk(self, index: int, opts: RunOptions) -> BitmapSession:
        node = self.nodes[index]
        try:
            client = qmp_block.connect(self.socket, name=f"backup-{self.name}")
        except QsdError as exc:
            raise SourceUnavailable(source=self.name, disk=index, detail=exc.stderr) from exc
        try:
            client.query_node(node)
            clear_leftovers(client)
        except QsdError as exc:
            client.close()
            raise SourceUnavailable(source=self.name, disk=index, detail=exc.stderr) from exc
        return BitmapSession(client, node, opts, source=self.name, own=False)
