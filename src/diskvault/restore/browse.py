"""Browsing a mounted partition without ever leaving it.

Paths are resolved one component at a time with ``openat(O_NOFOLLOW)`` from a
descriptor of the partition's mount root, never by the host's path lookup. A
guest symlink is followed the way the guest would see it, inside the partition:
an absolute target starts again at the partition root and ``..`` stops there.
So ``/etc/passwd`` behind a guest link means the guest's file, never the host's.
A ``..`` in a requested path is refused outright (400).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from diskvault.restore.errors import (
    NotADirectory,
    NothingMounted,
    PartitionNotFound,
    PartitionNotMounted,
    PathNotFound,
    PathOutside,
)

MAX_LINKS = 40  # like the kernel's MAXSYMLINKS
# O_NONBLOCK: opening a guest FIFO must not hang; nodev already refuses device nodes.
OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
KINDS = (
    (stat.S_ISDIR, "dir"),
    (stat.S_ISREG, "file"),
    (stat.S_ISLNK, "symlink"),
    (stat.S_ISFIFO, "fifo"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "char-device"),
    (stat.S_ISBLK, "block-device"),
)


def kind(mode: int) -> str:
    return next((name for test, name in KINDS if test(mode)), "other")


def display(name: str) -> str:
    """A JSON-safe name: bytes that are not UTF-8 become U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def split(path: str) -> list[str]:
    """The components of a requested path, relative to the partition root."""
    if "\x00" in path:
        raise PathOutside(path=path, reason="it contains a NUL byte")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise PathOutside(path=path, reason="'..' is not allowed; give a path from the root")
    return parts


@dataclass
class Location:
    """A requested path on one mounted partition of one restore mount."""

    mount_id: str
    partition: int
    root: Path  # the partition's mountpoint on the host
    parts: list[str]

    @property
    def path(self) -> str:
        return "/" + "/".join(self.parts)

    @property
    def name(self) -> str:
        return self.parts[-1] if self.parts else f"partition-{self.partition}"


class Target:
    """An open file or directory of the guest; the descriptor closes when collected."""

    def __init__(self, fd: int, st: os.stat_result) -> None:
        self.fd = fd
        self.stat = st

    @property
    def kind(self) -> str:
        return kind(self.stat.st_mode)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        self.close()


def open_root(root: Path) -> int:
    """The mount root, checked to still be a mount (a lazily unmounted one is empty)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    if os.fstat(fd).st_dev == os.stat(root.parent).st_dev:
        os.close(fd)
        raise FileNotFoundError(errno.ENOENT, "the partition is no longer mounted", str(root))
    return fd


def resolve(root_fd: int, parts: list[str]) -> int:
    """Open ``parts`` below ``root_fd`` as the guest would, treating it as ``/``."""
    stack = [os.dup(root_fd)]
    pending = list(reversed(parts))
    links = 0
    try:
        while pending:
            name = pending.pop()
            if name in ("", "."):
                continue
            if name == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                continue
            try:
                stack.append(os.open(name, OPEN_FLAGS, dir_fd=stack[-1]))
            except OSError as exc:
                if exc.errno != errno.ELOOP:
                    raise
                links += 1
                if links > MAX_LINKS:
                    raise
                target = os.readlink(name, dir_fd=stack[-1])
                if target.startswith("/"):
                    while len(stack) > 1:
                        os.close(stack.pop())
                pending.extend(reversed(target.split("/")))
        return stack.pop()
    finally:
        for fd in stack:
            os.close(fd)


def open_target(loc: Location) -> Target:
    """Open what ``loc`` names; symlinks followed inside the partition only."""
    try:
        root = open_root(loc.root)
        try:
            fd = resolve(root, loc.parts)
        finally:
            os.close(root)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PathOutside(path=loc.path, reason="too many levels of symbolic links") from None
        if exc.errno in (errno.EACCES, errno.ENXIO, errno.EPERM):
            raise PathOutside(path=loc.path, reason="it is a device or socket") from None
        raise PathNotFound(path=loc.path, partition=loc.partition, id=loc.mount_id) from None
    return Target(fd, os.fstat(fd))


def choose_partition(
    mount_id: str, partitions: list[dict[str, Any]], wanted: int | None, workdir: Path
) -> tuple[int, Path]:
    """The partition to use: the one asked for, else the first mounted one that
    holds the path (the only one, on most disks)."""
    if wanted is not None:
        found = next((p for p in partitions if p["index"] == wanted), None)
        if found is None:
            available = ", ".join(str(p["index"]) for p in partitions) or "none"
            raise PartitionNotFound(id=mount_id, partition=wanted, available=available)
        if not found["mounted"]:
            raise PartitionNotMounted(id=mount_id, partition=wanted, reason=found["reason"])
        return wanted, workdir / found["mountpoint"]
    mounted = [p for p in partitions if p["mounted"]]
    if not mounted:
        raise NothingMounted(id=mount_id)
    return mounted[0]["index"], workdir / mounted[0]["mountpoint"]


def locate(
    mount_id: str,
    partitions: list[dict[str, Any]],
    wanted: int | None,
    workdir: Path,
    path: str,
) -> Location:
    parts = split(path)
    if wanted is None and parts:
        for p in partitions:
            if p["mounted"] and exists(workdir / p["mountpoint"], parts):
                return Location(mount_id, p["index"], workdir / p["mountpoint"], parts)
    index, root = choose_partition(mount_id, partitions, wanted, workdir)
    return Location(mount_id, index, root, parts)


def exists(root: Path, parts: list[str]) -> bool:
    try:
        fd = open_root(root)
        try:
            os.close(resolve(fd, parts))
        finally:
            os.close(fd)
    except OSError:
        return False
    return True


# -- listing -------------------------------------------------------------------------


@dataclass
class Entry:
    name: str
    type: str
    size: int
    mtime: datetime
    mode: str  # permission bits, octal
    target: str | None  # symlinks: where they point, as stored in the guest


def entry(dir_fd: int, name: str) -> Entry:
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    target = None
    if stat.S_ISLNK(st.st_mode):
        target = display(os.readlink(name, dir_fd=dir_fd))
    return Entry(
        display(name),
        kind(st.st_mode),
        st.st_size,
        datetime.fromtimestamp(st.st_mtime, UTC),
        f"{stat.S_IMODE(st.st_mode):04o}",
        target,
    )


def list_dir(loc: Location, offset: int, limit: int) -> tuple[list[Entry], int]:
    """One page of a directory: directories first, then by name; only the page is stat'ed."""
    target = open_target(loc)
    try:
        if target.kind != "dir":
            raise NotADirectory(path=loc.path)
        with os.scandir(target.fd) as it:
            names = sorted((not e.is_dir(follow_symlinks=False), e.name) for e in it)
        page = [entry(target.fd, name) for _, name in names[offset : offset + limit]]
    finally:
        target.close()
    return page, len(names)


def walk(dir_fd: int, prefix: str = "") -> Iterator[tuple[str, int, str, os.stat_result]]:
    """``(relative path, parent fd, name, lstat)`` below ``dir_fd``, parents first,
    never following a symlink. The parent fd is open while its entry is handled."""
    with os.scandir(dir_fd) as it:
        names = sorted(e.name for e in it)
    for name in names:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        yield prefix + name, dir_fd, name, st
        if stat.S_ISDIR(st.st_mode):
            sub = os.open(name, OPEN_FLAGS | os.O_DIRECTORY, dir_fd=dir_fd)
            try:
                yield from walk(sub, f"{prefix}{name}/")
            finally:
                os.close(sub)
