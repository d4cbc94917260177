"""Work on local image files: checksums, space checks, conversion, sparse copies.

Shared by the job pipeline and the offline CLI (``diskvault image convert --local``),
so both convert with the same qemu-img options and the same safety rules.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import shutil
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from diskvault.fsutil import fsync_dir, fsync_path
from diskvault.images import allocation
from diskvault.images.digest import ExtentHasher, data_extents, file_digest, hash_blocks
from diskvault.images.errors import InsufficientSpace
from diskvault.tools import qemu_img
from diskvault.tools.process import Cancelled
from diskvault.tools.qemu_img import QemuImgError

MiB = 1024 * 1024
HASH_BUFFER = 8 * MiB
# vmdk and vhdx cannot be measured; their metadata stays well under this.
METADATA_ALLOWANCE = 32 * MiB
# A raw conversion that is also hashed runs in segments of this size (see _convert_raw_hashing).
SEGMENT = 512 * MiB
TARGET_FORMATS = ("raw", "qcow2", "vmdk", "vhdx")
# Formats qemu-img can resize; others must be converted first.
RESIZABLE = ("raw", "qcow2")

Progress = Callable[[int], None]
Cancel = Callable[[], bool]
_ZEROS = memoryview(bytes(HASH_BUFFER))


def sha256_file(
    path: Path, *, progress: Progress | None = None, should_cancel: Cancel | None = None
) -> str:
    """SHA-256 of a file; holes are hashed from a zero buffer instead of being read."""
    hasher = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        hash_range(fd, hasher, 0, os.fstat(fd).st_size, progress, should_cancel)
    finally:
        os.close(fd)
    return hasher.hexdigest()


def hash_range(
    fd: int,
    hasher: Any,
    start: int,
    end: int,
    progress: Progress | None = None,
    should_cancel: Cancel | None = None,
) -> None:
    """Feed ``[start, end)`` of a file to ``hasher``; ``progress`` gets the offset reached.

    Data is hashed straight from the page cache through a read-only mapping
    (no copy into a buffer); ``start`` must be page-aligned.
    """
    if end <= start:
        return
    with mmap.mmap(fd, end - start, offset=start, prot=mmap.PROT_READ) as mapped:
        mapped.madvise(mmap.MADV_SEQUENTIAL)
        view = memoryview(mapped)
        try:
            pos = start
            for data, stop in [*data_extents(fd, end, start), (end, end)]:
                while pos < data:
                    n = min(HASH_BUFFER, data - pos)
                    hasher.update(_ZEROS[:n])
                    pos += n
                    _tick(progress, should_cancel, pos)
                while pos < stop:
                    n = min(HASH_BUFFER, stop - pos)
                    at = pos - start
                    hasher.update(view[at : at + n])
                    # Unmap what is hashed: the pages stay cached, but do not count
                    # as this process's memory (RSS, OOM score).
                    aligned = at - at % mmap.PAGESIZE
                    mapped.madvise(mmap.MADV_DONTNEED, aligned, at + n - aligned)
                    pos += n
                    _tick(progress, should_cancel, pos)
        finally:
            view.release()


def _tick(progress: Progress | None, should_cancel: Cancel | None, done: int) -> None:
    if should_cancel is not None and should_cancel():
        raise Cancelled()
    if progress is not None:
        progress(done)


def allocated_bytes(path: Path) -> int:
    return os.stat(path).st_blocks * 512


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
    digest: bool = False,
    digest_progress: Progress | None = None,
    sync: bool = True,
) -> str | None:
    """Convert ``src`` into ``dst`` via ``dst.partial``, fsync, rename; nothing left on failure.

    Free space is checked first. The output is sparse; ``-m 8 -W`` lets qemu-img
    run eight requests at once and write them out of order. With ``sha256`` the
    output's SHA-256 is computed (from the page cache) while it is flushed to
    disk, and returned. ``sync=False`` skips the fsync (qemu-img's and cp's
    behaviour): the rename still never shows a partial file, but after a power cut
    the output may lack data that was still in the page cache.
    """
    needed = space_needed(src, src_fmt, dst_fmt, binary=binary)
    check_space(dst.parent, needed, f"converting to {dst_fmt}")
    partial = dst.with_name(dst.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        result = None
        if digest and dst_fmt == "raw" and not compress and not options:
            size = int(qemu_img.info(src, src_fmt, binary=binary)["virtual-size"])
            result = _convert_raw_hashing(
                src,
                src_fmt,
                partial,
                size,
                binary=binary,
                progress=progress,
                digest_progress=digest_progress,
                should_cancel=should_cancel,
                rate_limit=rate_limit,
            )
        else:
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
            if digest:
                with ThreadPoolExecutor(1, thread_name_prefix="fsync") as pool:
                    flushed = pool.submit(fsync_path, partial)
                    result, _ = file_digest(
                        partial, progress=digest_progress, should_cancel=should_cancel
                    )
                    flushed.result()
            elif sync:
                fsync_path(partial)
        os.replace(partial, dst)
        if sync:
            fsync_dir(dst.parent)
        return result
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


def _convert_raw_hashing(
    src: Path,
    src_fmt: str,
    partial: Path,
    size: int,
    *,
    binary: str,
    progress: Callable[[float], None] | None,
    digest_progress: Progress | None,
    should_cancel: Cancel | None,
    rate_limit: int | None,
) -> str:
    """Convert to raw a segment at a time, hashing each one while qemu-img writes the next.

    The hash is sequential and about as slow as the conversion itself; run one
    after the other they double the time, overlapped the hash all but vanishes.
    Segments where the source holds no data are neither converted nor read: the
    output starts as one hole, so a 4 TiB image with 1 MiB of data costs its MiB.
    """
    with open(partial, "xb") as fh:
        fh.truncate(size)  # all zeros: qemu-img writes only data (--target-is-zero)
    hasher = ExtentHasher()
    fd = os.open(partial, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="digest") as pool:
            hashed: Future[None] | None = None
            for offset in data_segments(src, src_fmt, size, binary=binary):
                length = min(SEGMENT, size - offset)

                def converted(pct: float, offset: int = offset, length: int = length) -> None:
                    if progress is not None:
                        progress(100 * (offset + length * pct / 100) / size)

                qemu_img.convert(
                    src,
                    src_fmt,
                    partial,
                    "raw",
                    segment=(offset, length),
                    progress=converted,
                    should_cancel=should_cancel,
                    rate_limit=rate_limit or None,
                    binary=binary,
                )
                if hashed is not None:
                    hashed.result()
                hashed = pool.submit(
                    hash_blocks, fd, hasher, offset, offset + length, digest_progress, should_cancel
                )
            os.fsync(fd)  # while the last segment is hashed
            if hashed is not None:
                hashed.result()
    finally:
        os.close(fd)
    if progress is not None:
        progress(100.0)
    return hasher.hexdigest(size)


def data_segments(src: Path, fmt: str, size: int, *, binary: str) -> list[int]:
    """Offsets of the ``SEGMENT``s of the guest disk in which ``qemu-img map`` shows data."""
    starts: set[int] = set()
    for start, end in allocation.data_ranges(src, fmt, binary=binary):
        starts.update(range(start - start % SEGMENT, min(size, end), SEGMENT))
    return sorted(starts)


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
