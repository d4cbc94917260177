"""Work on local image files: checksums, space checks, conversion, sparse copies.

Shared by the job pipeline and the offline CLI (``diskvault image convert --local``),
so both convert with the same qemu-img options and the same safety rules.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

from diskvault.images.errors import InsufficientSpace
from diskvault.storage.base import fsync_dir
from diskvault.tools import qemu_img
from diskvault.tools.process import Cancelled
from diskvault.tools.qemu_img import QemuImgError

MiB = 1024 * 1024
HASH_BUFFER = 8 * MiB
# vmdk and vhdx cannot be measured; their metadata stays well under this.
METADATA_ALLOWANCE = 32 * MiB
TARGET_FORMATS = ("raw", "qcow2", "vmdk", "vhdx")
# Formats qemu-img can resize; others must be converted first.
RESIZABLE = ("raw", "qcow2")

Progress = Callable[[int], None]
Cancel = Callable[[], bool]
_ZEROS = memoryview(bytes(HASH_BUFFER))


def data_extents(fd: int, size: int) -> list[tuple[int, int]]:
    """(start, end) of the data regions; holes between them read as zeros."""
    extents = []
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole remains
                break
            raise
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        extents.append((start, end))
        pos = end
    return extents


def sha256_file(
    path: Path, *, progress: Progress | None = None, should_cancel: Cancel | None = None
) -> str:
    """SHA-256 of a file; holes are hashed from a zero buffer instead of being read."""
    hasher = hashlib.sha256()
    buf = bytearray(HASH_BUFFER)
    view = memoryview(buf)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        pos = 0
        for start, end in [*data_extents(fd, size), (size, size)]:
            while pos < start:
                n = min(HASH_BUFFER, start - pos)
                hasher.update(_ZEROS[:n])
                pos += n
                _tick(progress, should_cancel, pos)
            while pos < end:
                n = os.preadv(fd, [view[: min(HASH_BUFFER, end - pos)]], pos)
                if n == 0:
                    raise OSError(errno.EIO, f"{path} shrank while it was being hashed")
                hasher.update(view[:n])
                pos += n
                _tick(progress, should_cancel, pos)
    finally:
        os.close(fd)
    return hasher.hexdigest()


def _tick(progress: Progress | None, should_cancel: Cancel | None, done: int) -> None:
    if should_cancel is not None and should_cancel():
        raise Cancelled()
    if progress is not None:
        progress(done)


def allocated_bytes(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def space_needed(src: Path, src_fmt: str, dst_fmt: str, *, binary: str) -> int:
    """Bytes the converted image will take; qemu-img measure where it can, else mapped data."""
    if dst_fmt == "qcow2":
        return int(qemu_img.measure(src, src_fmt, dst_fmt, binary=binary)["required"])
    data = sum(e["length"] for e in qemu_img.map(src, src_fmt, binary=binary) if e.get("data"))
    if src_fmt == "vhdx":
        # qemu maps a whole VHDX as data; VHDX has no compression, so its allocation bounds it.
        data = min(data, allocated_bytes(src))
    return data if dst_fmt == "raw" else data + data // 100 + METADATA_ALLOWANCE


def check_space(directory: Path, needed: int, action: str) -> None:
    free = shutil.disk_usage(directory).free
    if needed > free:
        raise InsufficientSpace(path=str(directory), needed=needed, free=free, action=action)


def convert_file(
    src: Path,
    src_fmt: str,
    dst: Path,
    dst_fmt: str,
    *,
    binary: str = qemu_img.DEFAULT_BINARY,
    progress: Callable[[float], None] | None = None,
    should_cancel: Cancel | None = None,
    compress: bool = False,
    rate_limit: int | None = None,
    options: Mapping[str, qemu_img.OptionValue] | None = None,
) -> None:
    """Convert ``src`` into ``dst`` via ``dst.partial``, fsync, rename; nothing left on failure.

    Free space is checked first. The output is sparse; ``-m 8 -W`` lets qemu-img
    run eight requests at once and write them out of order.
    """
    needed = space_needed(src, src_fmt, dst_fmt, binary=binary)
    check_space(dst.parent, needed, f"converting to {dst_fmt}")
    partial = dst.with_name(dst.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        qemu_img.convert(
            src,
            src_fmt,
            partial,
            dst_fmt,
            progress=progress,
            should_cancel=should_cancel,
            sparse=True,
            out_of_order=True,
            coroutines=8,
            compress=compress,
            rate_limit=rate_limit or None,
            options=options,
            binary=binary,
        )
        fsync_file(partial)
        os.replace(partial, dst)
        fsync_dir(dst.parent)
    except QemuImgError as exc:
        partial.unlink(missing_ok=True)
        if "No space left" in exc.stderr:
            free = shutil.disk_usage(dst.parent).free
            raise InsufficientSpace(
                path=str(dst.parent), needed=needed, free=free, action=f"converting to {dst_fmt}"
            ) from exc
        raise
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def data_beyond(path: Path, fmt: str, size: int, *, binary: str) -> int:
    """Bytes of allocated data at or past ``size``: what a shrink to ``size`` would lose."""
    lost = 0
    for extent in qemu_img.map(path, fmt, binary=binary):
        end = extent["start"] + extent["length"]
        if extent.get("data") and not extent.get("zero") and end > size:
            lost += end - max(size, extent["start"])
    return lost


def copy_sparse(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` keeping holes; data moves in the kernel (reflinks where it can)."""
    partial = dst.with_name(dst.name + ".partial")
    try:
        with open(src, "rb") as fin, open(partial, "wb") as fout:
            size = os.fstat(fin.fileno()).st_size
            in_kernel = True
            for start, end in data_extents(fin.fileno(), size):
                if in_kernel:
                    in_kernel = _copy_in_kernel(fin.fileno(), fout.fileno(), start, end)
                if not in_kernel:
                    _copy_buffered(fin.fileno(), fout.fileno(), start, end)
            fout.truncate(size)
            os.fsync(fout.fileno())
        os.replace(partial, dst)
        fsync_dir(dst.parent)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


# copy_file_range refuses some filesystem pairs (e.g. tmpfs to ext4); then copy through a buffer.
_NO_KERNEL_COPY = (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)


def _copy_in_kernel(fin: int, fout: int, start: int, end: int) -> bool:
    """Copy ``[start, end)``; False (nothing copied) if the kernel cannot do it."""
    pos = start
    while pos < end:
        try:
            n = os.copy_file_range(fin, fout, end - pos, offset_src=pos, offset_dst=pos)
        except OSError as exc:
            if pos == start and exc.errno in _NO_KERNEL_COPY:
                return False
            raise
        if n == 0:
            raise OSError(errno.EIO, "the source shrank while it was being copied")
        pos += n
    return True


def _copy_buffered(fin: int, fout: int, start: int, end: int) -> None:
    buf = bytearray(min(HASH_BUFFER, end - start))
    view = memoryview(buf)
    pos = start
    while pos < end:
        n = os.preadv(fin, [view[: min(len(buf), end - pos)]], pos)
        if n == 0:
            raise OSError(errno.EIO, "the source shrank while it was being copied")
        chunk = view[:n]
        while chunk:
            written = os.pwrite(fout, chunk, pos)
            chunk, pos = chunk[written:], pos + written
