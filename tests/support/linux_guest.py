"""A small disk that boots a real Linux guest, built from Debian packages.

- the kernel of ``linux-image-amd64`` (``/boot/vmlinuz-*``);
- an initramfs holding ``busybox-static``, whose ``/init`` prints a marker and
  a login-like prompt on ttyS0, then powers off;
- an ext4 partition with extlinux, and the syslinux MBR (``syslinux-common``).

The initramfs is written in cpio "newc" format here, so its ``/dev/console``
node needs no root; the partition is formatted and extlinux installed through
a loop device (the tests run as root, as the mount tests do).
"""

from __future__ import annotations

import gzip
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

LINUX_MARKER = b"DVLINUX-MARKER"
PROMPT = b"diskvault-guest login:"
DISK_SIZE = 64 * 1024 * 1024
MBR = Path("/usr/lib/syslinux/mbr/mbr.bin")
BUSYBOX = Path("/bin/busybox")
INIT = f"""#!/bin/busybox sh
/bin/busybox echo {LINUX_MARKER.decode()}
/bin/busybox echo "{PROMPT.decode()} "
/bin/busybox poweroff -f
"""


def missing() -> str | None:
    """Why the guest cannot be built here, or None."""
    if not sorted(Path("/boot").glob("vmlinuz-*")):
        return "no /boot/vmlinuz-* (install linux-image-amd64)"
    for path, pkg in ((BUSYBOX, "busybox-static"), (MBR, "syslinux-common")):
        if not path.exists():
            return f"no {path} (install {pkg})"
    if shutil.which("extlinux") is None:
        return "no extlinux (install extlinux)"
    return None


def _entry(name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> bytes:
    fields = [0, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0]
    head = b"070701" + b"".join(f"{v:08X}".encode() for v in fields)
    out = head + name.encode() + b"\0"
    out += b"\0" * (-len(out) % 4) + data
    return out + b"\0" * (-len(out) % 4)


def initramfs(path: Path) -> Path:
    entries = [
        _entry("dev", 0o040755),
        _entry("dev/console", 0o020600, rdev=(5, 1)),
        _entry("bin", 0o040755),
        _entry("bin/busybox", 0o100755, BUSYBOX.read_bytes()),
        _entry("init", 0o100755, INIT.encode()),
        _entry("TRAILER!!!", 0),
    ]
    path.write_bytes(gzip.compress(b"".join(entries), compresslevel=1))
    return path


def _run(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120).stdout


def build_disk(dest: Path, size: int = DISK_SIZE) -> Path:
    """A raw disk at ``dest`` that boots the guest through BIOS (or iPXE's sanboot)."""
    kernel = sorted(Path("/boot").glob("vmlinuz-*"))[-1]
    with open(dest, "wb") as fh:
        fh.truncate(size)
        fh.seek(446)  # one bootable Linux partition from 1 MiB to the end (LBA fields only)
        sectors = size // 512 - 2048
        fh.write(
            struct.pack("<B3sB3sII", 0x80, b"\xfe\xff\xff", 0x83, b"\xfe\xff\xff", 2048, sectors)
        )
        fh.seek(510)
        fh.write(b"\x55\xaa")
    # The partition through a loop device of its own (no udev here for partition nodes);
    # syslinux's boot sector takes its start from the MBR's partition entry.
    part = _run(
        "losetup", "--find", "--show", "--offset", str(2048 * 512),
        "--sizelimit", str(sectors * 512), str(dest),
    ).strip()  # fmt: skip
    mnt = Path(tempfile.mkdtemp(prefix="dv-linux-"))
    try:
        _run("mkfs.ext4", "-q", "-F", "-O", "^64bit,^metadata_csum", "-L", "guest", part)
        _run("mount", part, str(mnt))
        try:
            shutil.copyfile(kernel, mnt / "vmlinuz")
            initramfs(mnt / "initrd.gz")
            (mnt / "extlinux.conf").write_text(
                "DEFAULT linux\nTIMEOUT 0\nPROMPT 0\nSERIAL 0 115200\nLABEL linux\n"
                "  KERNEL /vmlinuz\n"
                "  APPEND initrd=/initrd.gz console=ttyS0 panic=-1 quiet loglevel=1"
                " mitigations=off nokaslr no_timer_check tsc=reliable\n"  # faster under TCG
            )
            _run("extlinux", "--install", str(mnt))
        finally:
            _run("umount", str(mnt))
    finally:
        _run("losetup", "-d", part)
        mnt.rmdir()
    with open(dest, "r+b") as fh:
        fh.write(MBR.read_bytes()[:440])  # boot code only: the partition table stays
    return dest


def corrupt_mbr(disk: Path) -> None:
    """Zero the boot code and partition table: BIOS then finds nothing to boot."""
    with open(disk, "r+b") as fh:
        fh.write(bytes(512))
