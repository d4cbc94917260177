"""Durable file writes shared by every domain: whole writes, fsync, atomic renames.

A file is published under its final name only after its bytes and its directory
entry are on disk: write ``<name>.<random>.partial``, fsync it, rename, fsync the
directory. ``fsync_dir`` raises like any syscall; callers on filesystems that
cannot sync a directory (some FUSE and network mounts) choose to ignore it.
"""

from __future__ import annotations

import errno
import io
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PARTIAL_SUFFIX = ".partial"


def pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    """``pwrite`` until every byte is written (a short write is not an error)."""
    while data:
        n = os.pwrite(fd, data, offset)
        data, offset = data[n:], offset + n


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_path(path: Path) -> None:
    _fsync(path, 0)


def fsync_dir(path: Path) -> None:
    _fsync(path, os.O_DIRECTORY)


def rename_noreplace(src: Path, dst: Path) -> None:
    """Rename without replacing; raises FileExistsError if ``dst`` exists.

    A hard link fails atomically on an existing name. Filesystems without hard
    links (FAT, some FUSE) fall back to check-then-rename.
    """
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
            raise
        if os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, "destination exists", str(dst)) from exc
        os.rename(src, dst)
        return
    os.unlink(src)


@contextmanager
def atomic_file(path: Path, *, overwrite: bool = True) -> Iterator[io.BufferedWriter]:
    """Write ``path`` via ``<name>.<random>.partial``, fsync, then rename.

    On any error the partial file is removed and ``path`` is left as it was.
    Raises FileExistsError when ``overwrite`` is False and ``path`` exists.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}{PARTIAL_SUFFIX}")
    try:
        with open(tmp, "xb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            rename_noreplace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_atomic(path: Path, data: bytes, *, overwrite: bool = True) -> None:
    with atomic_file(path, overwrite=overwrite) as fh:
        fh.write(data)
