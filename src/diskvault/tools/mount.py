"""Loop devices and read-only mounts of disk images (file-level restore).

The kernel here has no partition-table parsers (CONFIG_MSDOS_PARTITION and
CONFIG_EFI_PARTITION are off), so ``losetup -P`` creates no ``loopNpM``
nodes. :func:`partitions` reads the table in userspace with ``partx`` and
attaches each partition as its own read-only loop device (offset + sizelimit)
on top of the disk's loop device; :func:`losetup_detach` removes those too.

Every mount is read-only, nosuid, nodev and noexec. Journals are never
replayed (ext ``noload``, xfs ``norecovery``). NTFS goes through ntfs-3g and
FAT through fusefat unless the kernel has vfat.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from diskvault.errors import ServiceUnavailable, Unprocessable
from diskvault.tools.process import ToolError, run

SECTOR = 512
SAFE_OPTIONS = "ro,nosuid,nodev,noexec"
# xfs nouuid: two restore points of one disk (or two mounts of one point) share a UUID.
KERNEL_OPTIONS = {
    "ext2": ",noload",
    "ext3": ",noload",
    "ext4": ",noload",
    "xfs": ",norecovery,nouuid",
}
ENCRYPTED = {"crypto_LUKS": "LUKS", "BitLocker": "BitLocker", "VeraCrypt": "VeraCrypt"}
TIMEOUT = 30.0


class MountError(ToolError):
    tool_name = "mount"


class UnsupportedFilesystem(Unprocessable):
    template = "cannot mount {device}: {reason}"
    title = "Unsupported filesystem"


class MountUnavailable(ServiceUnavailable):
    template = "{what} is not available on this host: {detail}"


@dataclass(frozen=True)
class Partition:
    index: int  # 0 when the whole disk is one filesystem
    device: str
    size: int
    fstype: str | None
    label: str | None
    uuid: str | None
    offset: int = 0


@dataclass(frozen=True)
class LoopDevice:
    name: str
    back_file: str
    offset: int
    size_limit: int
    read_only: bool


@dataclass(frozen=True)
class Mount:
    mountpoint: Path
    source: str
    fstype: str
    options: frozenset[str]


def fuse_available() -> bool:
    return os.access("/dev/fuse", os.R_OK | os.W_OK) and "fuse" in kernel_filesystems()


def loop_available() -> bool:
    return os.access("/dev/loop-control", os.R_OK | os.W_OK)


def require_mount_support() -> None:
    """Raise a 503 naming what is missing before any restore work starts."""
    if not loop_available():
        raise MountUnavailable(what="loop devices", detail="/dev/loop-control is missing")
    if not fuse_available():
        raise MountUnavailable(what="FUSE", detail="/dev/fuse or the fuse filesystem is missing")


def kernel_filesystems() -> set[str]:
    try:
        text = Path("/proc/filesystems").read_text()
    except OSError:
        return set()
    return {line.split()[-1] for line in text.splitlines() if line.strip()}


# -- loop devices ------------------------------------------------------------


def losetup_attach(
    path: Path | str,
    *,
    read_only: bool = True,
    partscan: bool = True,
    offset: int = 0,
    size: int | None = None,
) -> str:
    """Attach ``path`` to a free loop device and return its name."""
    cmd = ["losetup", "-f", "--show"]
    if read_only:
        cmd.append("-r")
    if partscan:
        cmd.append("-P")
    if offset:
        cmd += ["-o", str(offset)]
    if size is not None:
        cmd += ["--sizelimit", str(size)]
    return run([*cmd, str(path)], timeout=TIMEOUT, error=MountError).stdout.strip()


def list_loop_devices(backing_prefix: Path | str | None = None) -> list[LoopDevice]:
    """Loop devices, optionally only those whose backing file is under a prefix."""
    out = run(["losetup", "-J", "-l"], timeout=TIMEOUT, error=MountError).stdout
    devices = json.loads(out)["loopdevices"] if out.strip() else []
    prefix = str(backing_prefix) if backing_prefix is not None else None
    found = []
    for dev in devices:
        back = (dev.get("back-file") or "").removesuffix(" (deleted)")
        if prefix is None or back.startswith(prefix):
            found.append(
                LoopDevice(
                    dev["name"], back, int(dev["offset"]), int(dev["sizelimit"]), bool(dev["ro"])
                )
            )
    return found


def losetup_detach(device: str) -> None:
    """Detach ``device`` and the partition loops stacked on it."""
    for child in list_loop_devices(device):
        if child.back_file == device:
            losetup_detach(child.name)
    run(["losetup", "-d", device], timeout=TIMEOUT, error=MountError)


def probe(device: str) -> dict[str, str]:
    """Low-level blkid probe (no cache, no udev): TYPE, LABEL, UUID, PTTYPE..."""
    res = run(["blkid", "-p", "-o", "export", device], timeout=TIMEOUT, check=False)
    if res.returncode not in (0, 2):  # 2: nothing recognised
        raise MountError(cmd=res.cmd, returncode=res.returncode, stderr=res.stderr)
    return dict(line.split("=", 1) for line in res.stdout.splitlines() if "=" in line)


def _partition(index: int, device: str, offset: int, size: int) -> Partition:
    info = probe(device)
    return Partition(
        index, device, size, info.get("TYPE"), info.get("LABEL"), info.get("UUID"), offset
    )


def partitions(loopdev: str) -> list[Partition]:
    """Partitions of a disk's loop device, each with a device node to mount.

    A disk without a partition table that holds a filesystem is index 0.
    """
    base = Path(loopdev).name
    sysfs = Path("/sys/block") / base
    kernel = sorted(sysfs.glob(f"{base}p*"), key=lambda p: int((p / "partition").read_text()))
    if kernel:
        return [
            _partition(
                int((p / "partition").read_text()),
                f"/dev/{p.name}",
                int((p / "start").read_text()) * SECTOR,
                int((p / "size").read_text()) * SECTOR,
            )
            for p in kernel
        ]
    info = probe(loopdev)
    if "PTTYPE" not in info:
        size = int((sysfs / "size").read_text()) * SECTOR
        return [_partition(0, loopdev, 0, size)] if info.get("TYPE") else []
    out = run(
        ["partx", "-g", "-r", "-b", "-o", "NR,START,SECTORS", loopdev],
        timeout=TIMEOUT,
        error=MountError,
    ).stdout
    found = []
    read_only = (sysfs / "ro").read_text().strip() == "1"
    # Calling again (another browse request) reuses the loops already stacked.
    stacked = {
        (d.offset, d.size_limit): d.name
        for d in list_loop_devices(loopdev)
        if d.back_file == loopdev
    }
    for line in out.splitlines():
        nr, start, sectors = (int(x) for x in line.split())
        offset, size = start * SECTOR, sectors * SECTOR
        dev = stacked.get((offset, size)) or losetup_attach(
            loopdev, read_only=read_only, partscan=False, offset=offset, size=size
        )
        found.append(_partition(nr, dev, offset, size))
    return found


# -- mounts ------------------------------------------------------------------


def mount_readonly(device: str, mountpoint: Path, fstype: str | None) -> None:
    """Mount read-only, nosuid, nodev, noexec, without replaying journals."""
    if fstype in ENCRYPTED:
        raise UnsupportedFilesystem(
            device=device,
            reason=f"the volume is {ENCRYPTED[fstype]}-encrypted; restore the whole disk instead",
        )
    if not fstype:
        raise UnsupportedFilesystem(
            device=device, reason="no filesystem was recognised (unformatted, swap or damaged?)"
        )
    mountpoint = Path(mountpoint)
    mountpoint.mkdir(parents=True, exist_ok=True)
    kernel = kernel_filesystems()
    if fstype == "ntfs":
        cmd = ["ntfs-3g", "-o", SAFE_OPTIONS, device, str(mountpoint)]
    elif fstype in ("vfat", "msdos") and "vfat" not in kernel:
        cmd = ["fusefat", "-o", SAFE_OPTIONS, device, str(mountpoint)]
    elif fstype in kernel or fstype in KERNEL_OPTIONS:
        options = SAFE_OPTIONS + KERNEL_OPTIONS.get(fstype, "")
        cmd = ["mount", "-t", fstype, "-o", options, device, str(mountpoint)]
    else:
        raise UnsupportedFilesystem(
            device=device, reason=f"this host has no driver for {fstype} filesystems"
        )
    run(cmd, timeout=TIMEOUT, error=MountError)


def umount(mountpoint: Path, *, lazy_fallback: bool = True) -> None:
    """Unmount; if busy and ``lazy_fallback``, detach lazily instead."""
    res = run(["umount", str(mountpoint)], timeout=TIMEOUT, check=False)
    if res.returncode == 0:
        return
    if lazy_fallback:
        run(["umount", "-l", str(mountpoint)], timeout=TIMEOUT, error=MountError)
        return
    raise MountError(cmd=res.cmd, returncode=res.returncode, stderr=res.stderr)


_OCTAL = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def list_mounts(under: Path | None = None) -> list[Mount]:
    """Mounts from /proc/self/mountinfo, optionally only those under ``under``."""
    found = []
    root = Path(under).resolve() if under is not None else None
    for line in Path("/proc/self/mountinfo").read_text(errors="surrogateescape").splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        mountpoint = Path(_unescape(fields[4]))
        if root is not None and not mountpoint.is_relative_to(root):
            continue
        options = frozenset(fields[5].split(",")) | frozenset(tail[2].split(","))
        found.append(Mount(mountpoint, _unescape(tail[1]), tail[0], options))
    return found
