"""Fast local tree walk: one ``lstat`` per regular file, nothing more.

The duplicate finder and the organizer scan both start here, and on trees of
hundreds of thousands of files the per-file Python work is what costs, so
entries are plain tuples with ``str`` paths (no ``Path`` objects), the walk is
an explicit stack of ``os.scandir`` calls (no recursion limit), and the file
type comes from ``d_type`` without a syscall. Symlinks are never followed and
never yielded, and neither are sockets, FIFOs or device nodes: only regular
files carry content worth comparing or organizing.

A warm duplicate re-scan is little more than this walk plus the interpreter's
start, so this module imports nothing beyond ``os`` and ``collections`` (which
``sqlite3`` loads anyway): ``typing`` alone, with the ``re`` it pulls in, would
add 8 ms, 4% of that re-scan.
"""

from __future__ import annotations

import os
import stat
from collections import namedtuple

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from typing import NamedTuple

    class FileEntry(NamedTuple):
        path: str
        size: int
        mtime_ns: int
        dev: int
        ino: int
        nlink: int
        ctime_ns: int = 0

    # A FileEntry's fields as a plain tuple, in the same order.
    Row = tuple[str, int, int, int, int, int, int]
else:
    FileEntry = namedtuple(
        "FileEntry", "path size mtime_ns dev ino nlink ctime_ns", defaults=(0,), module=__name__
    )
    FileEntry.__doc__ = """One regular file as seen by the walk (``lstat`` fields, path as ``str``).

    ``ctime_ns`` is not part of the hash cache key (that is (dev, ino, size,
    mtime)); it makes the whole-result fingerprint notice a write whose mtime
    was put back.
    """

# How many directories to walk between two polls of ``should_cancel``.
CANCEL_POLL_DIRS = 64

# tuple.__new__ skips the namedtuple's Python-level __new__: a tenth of the walk.
_new = tuple.__new__


def cancelled() -> Exception:
    """A :class:`~diskvault.tools.process.Cancelled` to raise.

    Imported on use: the process-tools module (subprocess and friends) is a
    large share of a short CLI scan's start-up, and is only needed to cancel.
    """
    from diskvault.tools.process import Cancelled

    return Cancelled()


def normalize_roots(roots: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Absolute, de-duplicated roots with any root nested inside another dropped.

    Overlapping roots would otherwise yield the same file twice; that would be
    harmless for duplicate detection (same inode) but wasteful.
    """
    absolute = sorted({os.path.abspath(os.fspath(r)) for r in roots})
    kept: list[str] = []
    for root in absolute:
        if not any(root == k or root.startswith(k.rstrip(os.sep) + os.sep) for k in kept):
            kept.append(root)
    return kept


def _row(path: str, st: os.stat_result) -> Row:
    return (path, st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino, st.st_nlink, st.st_ctime_ns)


def walk(
    roots: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    on_error: Callable[[OSError], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> Iterator[FileEntry]:
    """Yield every regular file under ``roots``.

    A root may be a directory (walked recursively) or a file. Unreadable
    directories and files that vanish mid-walk go to ``on_error``; without it
    they raise. ``should_cancel`` is polled every few directories and raises
    :class:`~diskvault.tools.process.Cancelled`.
    """
    for rows in walk_rows(roots, on_error=on_error, should_cancel=should_cancel):
        for row in rows:
            yield _new(FileEntry, row)


def walk_rows(
    roots: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    on_error: Callable[[OSError], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> Iterator[list[Row]]:
    """:func:`walk` as plain tuples (:class:`FileEntry` fields), one list per directory.

    For callers that look at every file only in bulk: plain tuples are
    cheaper to build, and ``marshal`` serializes them in one call.
    """
    if isinstance(roots, str | os.PathLike):
        roots = [roots]
    stack: list[str] = []
    files: list[Row] = []
    for root in normalize_roots(roots):
        try:
            st = os.stat(root)  # a root given as a symlink is followed, like find -H
        except OSError as exc:
            if on_error is None:
                raise
            on_error(exc)
            continue
        if stat.S_ISDIR(st.st_mode):
            stack.append(root)
        elif stat.S_ISREG(st.st_mode):
            files.append(_row(root, st))
    if files:
        yield files

    dirs_done = 0
    while stack:
        dirs_done += 1
        if should_cancel is not None and dirs_done % CANCEL_POLL_DIRS == 0 and should_cancel():
            raise cancelled()
        directory = stack.pop()
        prefix = directory if directory.endswith(os.sep) else directory + os.sep
        try:
            # Scanning by fd makes each entry's stat an fstatat() relative to
            # the directory: the kernel resolves one name, not the whole path.
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            if on_error is None:
                raise
            on_error(exc)
            continue
        rows: list[Row] = []
        append = rows.append
        try:
            with os.scandir(fd) as it:
                for entry in it:
                    try:
                        # Files first: they outnumber folders, so most entries
                        # need one type check, not two.
                        if entry.is_file(follow_symlinks=False):
                            st = entry.stat(follow_symlinks=False)
                            # _row() inlined: a call per file costs a few ms per 50,000.
                            append(
                                (
                                    prefix + entry.name,
                                    st.st_size,
                                    st.st_mtime_ns,
                                    st.st_dev,
                                    st.st_ino,
                                    st.st_nlink,
                                    st.st_ctime_ns,
                                )
                            )
                        elif entry.is_dir(follow_symlinks=False):
                            stack.append(prefix + entry.name)
                    except OSError as exc:
                        if on_error is None:
                            raise
                        on_error(OSError(exc.errno, exc.strerror, prefix + entry.name))
        finally:
            os.close(fd)
        if rows:
            yield rows
