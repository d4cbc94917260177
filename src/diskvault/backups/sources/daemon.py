"""qemu-storage-daemon helpers shared by the sources that run one per disk."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from diskvault.backups.sources.base import Previous, Storage
from diskvault.config import Settings
from diskvault.tools import qmp_block
from diskvault.tools.qmp_block import BlockClient
from diskvault.tools.qsd import QsdError, QsdServer, kill_stale

JOB_PREFIX = "dvb-"
TARGET_PREFIX = "dvt-"
STALE_QUIT_TIMEOUT = 10.0
# The engine fsyncs each new file once, at the end, while checksumming it. Without
# no-flush the qcow2 driver also fdatasyncs the target whenever it orders metadata
# updates during the copy (an incremental took ~40% longer) and on close. Closing the
# node still writes the metadata out.
TARGET_OPTIONS: dict[str, Any] = {"cache": {"no-flush": True}}


@dataclass
class TargetNode:
    """A target qcow2 opened on a QMP monitor, with what it needed: the secret of an
    encrypted one and its backing chain, opened node by node so that every layer
    gets the secret."""

    client: BlockClient
    node: str
    chain: int = 0
    secret: str | None = None

    def close(self) -> None:
        """Deleting the node writes the image's metadata out: its failure is raised."""
        try:
            self.client.blockdev_del(self.node)
        finally:
            self.client.close_chain(f"{self.node}b", self.chain)
            if self.secret is not None:
                with contextlib.suppress(QsdError):
                    self.client.del_secret(self.secret)


def open_target(
    client: BlockClient,
    node: str,
    target: Path,
    previous: Previous | None,
    storage: Storage,
    **opts: Any,
) -> TargetNode:
    """``blockdev-add`` of a new point's file (``previous``: it is an incremental on it)."""
    key = storage.key
    if key is None:
        client.blockdev_add(node, "qcow2", filename=target, **TARGET_OPTIONS, **opts)
        return TargetNode(client, node)
    secret = f"{node}k"
    client.add_secret(secret, key.data)
    opened = TargetNode(client, node, secret=secret)
    try:
        encrypt = {"format": "luks", "key-secret": secret}
        below: str | Literal[False] = False
        if previous is not None:
            files = previous.chain or (previous.image,)
            opened.chain = len(files)  # closing skips the nodes that were not opened
            below = client.open_chain(files, f"{node}b", encrypt=encrypt)
        client.blockdev_add(
            node,
            "qcow2",
            filename=target,
            backing=below,
            encrypt=encrypt,
            **TARGET_OPTIONS,
            **opts,
        )
    except BaseException:
        with contextlib.suppress(QsdError):
            opened.close()
        raise
    return opened


def start_daemon(workdir: Path, settings: Settings, name: str) -> QsdServer:
    """A QSD for one disk; one left running by a killed worker is stopped first."""
    stop_stale(workdir)
    server = QsdServer(workdir, name=name, binary=settings.QEMU_STORAGE_DAEMON_PATH)
    server.start()
    return server


def stop_stale(workdir: Path) -> None:
    """Quit a QSD orphaned by a killed worker over QMP, so it saves its persistent
    bitmaps cleanly (a SIGKILL would leave them inconsistent and force a full)."""
    try:
        pid = int((workdir / "qsd.pid").read_text().strip())
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError):
        return
    if not comm.startswith("qemu-storage"):
        return
    with contextlib.suppress(QsdError), qmp_block.connect(workdir / "qmp.sock", timeout=2) as c:
        clear_leftovers(c)
        c.qmp("quit", timeout=5)
    deadline = time.monotonic() + STALE_QUIT_TIMEOUT
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    kill_stale(workdir)


def clear_leftovers(client: BlockClient) -> None:
    """Cancel our block jobs and drop our target nodes left by an interrupted run."""
    for job in client.qmp("query-jobs"):
        if str(job["id"]).startswith(JOB_PREFIX):
            with contextlib.suppress(QsdError):
                client.qmp("job-cancel", id=job["id"])
    deadline = time.monotonic() + STALE_QUIT_TIMEOUT
    while time.monotonic() < deadline:
        ours = [j for j in client.qmp("query-jobs") if str(j["id"]).startswith(JOB_PREFIX)]
        for job in ours:
            if job["status"] == "concluded":
                client.qmp("job-dismiss", id=job["id"])
        if not ours:
            break
        time.sleep(0.05)
    for node in client.qmp("query-named-block-nodes", flat=True):
        name = str(node.get("node-name", ""))
        if name.startswith(TARGET_PREFIX) and node.get("drv") == "qcow2":
            with contextlib.suppress(QsdError):
                client.blockdev_del(name)
