"""The host side of a restore mount: QSD, loop devices and filesystem mounts.

A mount owns one work directory under ``RESTORE_MOUNT_ROOT``::

    <workdir>/qsd.pid, qmp.sock, qsd.log   the qemu-storage-daemon
    <workdir>/disk                         its read-only FUSE export (raw view of the chain)
    <workdir>/p<N>/                        partition N mounted ro,nosuid,nodev,noexec

Everything is found again from the work directory alone, so :func:`detach` tears
down a mount made by another process or by one that crashed.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import structlog

from diskvault.backups.restore import Crypt
from diskvault.tools import mount
from diskvault.tools.mount import Partition, UnsupportedFilesystem
from diskvault.tools.process import ToolError
from diskvault.tools.qsd import QsdServer, kill_stale

log = structlog.get_logger("diskvault.restore")

EXPORT_NAME = "disk"
NOT_FILES = {
    "swap": "a swap area holds no files",
    "LVM2_member": "an LVM physical volume; restore the whole disk to reach its volumes",
    "linux_raid_member": "a RAID member; restore the whole disk to assemble the array",
}

# Servers this process started, by work directory: stopping them over QMP is
# cleaner than killing by pidfile, which is what other processes have to do.
_servers: dict[str, QsdServer] = {}
_servers_lock = threading.Lock()


@dataclass
class PartitionState:
    index: int
    fstype: str | None
    size: int
    label: str | None
    uuid: str | None
    mounted: bool
    reason: str | None
    mountpoint: str | None  # name inside the work directory
    mount_path: str | None = None  # absolute, on the server: what the API shows

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Attached:
    qsd_pid: int | None
    loops: list[str]
    partitions: list[PartitionState]


LOOPS_FILE = "loops"


def export_path(workdir: Path) -> Path:
    return workdir / EXPORT_NAME


def mount_partition(part: Partition, workdir: Path) -> PartitionState:
    """Mount one partition; what cannot be mounted comes back with the reason."""
    name = f"p{part.index}"
    state = PartitionState(
        part.index, part.fstype, part.size, part.label, part.uuid, False, None, None
    )
    if part.fstype in NOT_FILES:
        state.reason = NOT_FILES[part.fstype]
        return state
    try:
        mount.mount_readonly(part.device, workdir / name, part.fstype)
    except UnsupportedFilesystem as exc:
        state.reason = str(exc.fields.get("reason") or exc.message)
    except ToolError as exc:
        detail = " ".join(exc.stderr.split()) or f"exit status {exc.fields.get('returncode')}"
        state.reason = f"the {part.fstype} filesystem failed to mount: {detail}"
    else:
        state.mounted, state.mountpoint = True, name
        state.mount_path = str(workdir / name)
    if not state.mounted:
        with contextlib.suppress(OSError):
            (workdir / name).rmdir()
    return state


def attach(
    workdir: Path, image: Path, fmt: str, qsd_binary: str, crypt: Crypt | None = None
) -> Attached:
    """Export ``image`` (with its backing chain) read-only and mount what it holds;
    an encrypted point's chain is opened layer by layer with its key (sent over QMP)."""
    workdir = workdir.resolve()
    workdir.mkdir(parents=True)
    server = QsdServer(workdir, name=f"restore-{workdir.name}", binary=qsd_binary)
    try:
        server.start()
        with _servers_lock:
            _servers[str(workdir)] = server
        if crypt is None:
            export = server.export_image_fuse(image, fmt, export_path(workdir), writable=False)
        else:
            server.add_secret("imgkey", crypt.key.data)
            encrypt = {"format": "luks", "key-secret": "imgkey"}
            node = server.open_chain(crypt.chain, "img", encrypt=encrypt)
            export = server.add_fuse_export(f"{node}-fuse", node, export_path(workdir))
        loop = mount.losetup_attach(export.path, read_only=True, partscan=True)
        # Named here for a start-up after a crash: QSD dies with its server, and a loop
        # on its vanished FUSE export then shows "/" as its backing file.
        (workdir / LOOPS_FILE).write_text(loop)
        parts = mount.partitions(loop)
        loops = [loop, *(p.device for p in parts if p.device != loop)]
        if parts:
            states = [mount_partition(p, workdir) for p in parts]
        else:
            reason = "no partition table or filesystem was recognised on this disk"
            states = [PartitionState(0, None, image_size(loop), None, None, False, reason, None)]
        return Attached(server.pid, loops, states)
    except BaseException:
        detach(workdir)
        raise


def image_size(loop: str) -> int:
    return int(Path(f"/sys/block/{Path(loop).name}/size").read_text()) * mount.SECTOR


def detach(workdir: Path) -> list[str]:
    """Unmount, detach loops, stop QSD, remove ``workdir``; returns what went wrong.

    Each step runs even if an earlier one failed, so a partial mount or the
    leftovers of a crash are cleaned as far as the host allows.
    """
    problems: list[str] = []
    workdir = workdir.resolve()  # /proc/self/mountinfo has resolved paths
    export = export_path(workdir)

    def attempt(what: str, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except (ToolError, OSError) as exc:
            problems.append(f"{what}: {exc}")

    for m in mount.list_mounts(workdir):
        if m.mountpoint not in (export, workdir):
            attempt(f"umount {m.mountpoint}", mount.umount, m.mountpoint)
    try:
        recorded = (workdir / LOOPS_FILE).read_text().split()
    except OSError:
        recorded = []
    for dev in mount.list_loop_devices():
        orphaned = dev.name in recorded and dev.back_file in ("/", "")
        if dev.back_file == str(export) or orphaned:
            attempt(f"detach {dev.name}", mount.losetup_detach, dev.name)
    with _servers_lock:
        server = _servers.pop(str(workdir), None)
    if server is not None:
        server.stop()
    else:
        kill_stale(workdir)
    for m in mount.list_mounts(workdir):
        # A killed QSD leaves its FUSE export behind ("transport endpoint is not connected").
        attempt(f"umount {m.mountpoint}", mount.umount, m.mountpoint)
    if mount.list_mounts(workdir):
        problems.append(f"{workdir} still has mounts; left in place")
    elif workdir.exists():
        attempt(f"remove {workdir}", shutil.rmtree, workdir)
    if problems:
        log.warning("restore mount cleanup incomplete", workdir=str(workdir), problems=problems)
    return problems


def owned_workdirs(root: Path) -> list[Path]:
    """Work directories under ``root``, including ones only visible as mounts."""
    root = root.resolve()
    found = {p for p in root.iterdir() if p.is_dir()} if root.is_dir() else set()
    for m in mount.list_mounts(root):
        rel = m.mountpoint.relative_to(root)
        if rel.parts:
            found.add(root / rel.parts[0])
    return sorted(found)


def forget(workdir: Path) -> None:
    """Drop (stop) a server of this process whose mount another process tore down."""
    with _servers_lock:
        server = _servers.pop(str(workdir.resolve()), None)
    if server is not None:
        with contextlib.suppress(ToolError, OSError):
            server.stop()


def local_workdirs() -> list[str]:
    with _servers_lock:
        return list(_servers)
