"""qemu-storage-daemon with the QMP commands only tests use: NBD exports of nodes,
dirty bitmaps made by hand, stream and commit jobs, closing a FUSE export."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from diskvault.tools.qmp_block import bitmap_add_action
from diskvault.tools.qsd import FuseExport, QsdServer


def _drop_none(args: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in args.items() if v is not None}


class TestQsd(QsdServer):
    __test__ = False  # not a pytest test class

    def add_nbd_server(self, addr: Path | tuple[str, int]) -> None:
        """Start the NBD server on a unix socket or a loopback ``(host, port)``."""
        if isinstance(addr, tuple):
            host, port = addr
            sock = {"type": "inet", "data": {"host": host, "port": str(port)}}
        else:
            sock = {"type": "unix", "data": {"path": str(addr)}}
        self.qmp("nbd-server-start", addr=sock)

    def add_nbd_export(
        self,
        export_id: str,
        node_name: str,
        name: str | None = None,
        *,
        writable: bool = False,
        bitmaps: Sequence[str] = (),
    ) -> None:
        """Export a node over NBD; each bitmap appears as ``qemu:dirty-bitmap:<name>``."""
        args: dict[str, Any] = {
            "type": "nbd",
            "id": export_id,
            "node-name": node_name,
            "name": name or node_name,
            "writable": writable,
        }
        if bitmaps:
            args["bitmaps"] = list(bitmaps)
        self.qmp("block-export-add", args)

    def bitmap_add(self, node: str, name: str, *, persistent: bool = True) -> None:
        self.qmp(
            "block-dirty-bitmap-add", bitmap_add_action(node, name, persistent=persistent)["data"]
        )

    def bitmap_clear(self, node: str, name: str) -> None:
        self.qmp("block-dirty-bitmap-clear", node=node, name=name)

    def block_stream(
        self, job_id: str, device: str, *, base_node: str | None = None, speed: int | None = None
    ) -> None:
        """Copy the backing data of ``device`` (down to ``base_node``) into it."""
        args = {"job-id": job_id, "device": device, "base-node": base_node, "speed": speed}
        self.qmp("block-stream", _drop_none({**args, "auto-dismiss": False}))

    def block_commit(
        self,
        job_id: str,
        device: str,
        *,
        top_node: str | None = None,
        base_node: str | None = None,
        speed: int | None = None,
    ) -> None:
        """Merge ``top_node`` (default: the active layer) down into ``base_node``."""
        args = {
            "job-id": job_id,
            "device": device,
            "top-node": top_node,
            "base-node": base_node,
            "speed": speed,
            "auto-dismiss": False,
        }
        self.qmp("block-commit", _drop_none(args))

    def close_export(self, export: FuseExport) -> None:
        """Undo :meth:`export_image_fuse`."""
        self.export_del(export.export_id)
        self.blockdev_del(export.node_name)
