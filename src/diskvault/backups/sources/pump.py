"""Writing chosen extents into a qcow2 overlay through a QSD FUSE view.

Used where no single QEMU command copies exactly the right extents: the dirty
extents an NBD server reports, and the clusters a hash map found changed. The
target node has ``detect-zeroes=on`` so zeroed clusters become qcow2 zero
clusters, which also hide the backing file's data as they must.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from diskvault.backups.sources.base import Previous, Storage
from diskvault.backups.sources.daemon import TARGET_PREFIX, open_target
from diskvault.fsutil import pwrite_all
from diskvault.tools.process import Cancelled
from diskvault.tools.qsd import QsdServer

CHUNK = 4 * 1024 * 1024


@contextlib.contextmanager
def fuse_view(server: QsdServer, node: str, path: Path, *, writable: bool) -> Iterator[int]:
    """An open file descriptor on a raw FUSE view of ``node``."""
    export = server.add_fuse_export(f"{node}-fuse", node, path, writable=writable)
    fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
    try:
        # No fsync here: closing the node writes out its metadata, and the engine
        # fsyncs the target file itself.
        yield fd
    finally:
        os.close(fd)
        server.export_del(export.export_id)
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def target_view(
    server: QsdServer, target: Path, short_id: str, previous: Previous | None, storage: Storage
) -> Iterator[int]:
    """A writable raw view of the new point's file; with compression every write goes
    through a ``compress`` filter node, so each cluster is stored compressed."""
    node = f"{TARGET_PREFIX}{short_id}"
    opened = open_target(server, node, target, previous, storage, **{"detect-zeroes": "on"})
    top = node
    try:
        if storage.compression:
            top = f"{node}c"
            server.qmp("blockdev-add", {"driver": "compress", "node-name": top, "file": node})
        with fuse_view(server, top, server.workdir / f"{node}.raw", writable=True) as fd:
            yield fd
    finally:
        if top != node:
            server.blockdev_del(top)
        opened.close()


def pread_full(fd: int, view: memoryview, offset: int) -> int:
    """Fill ``view`` from ``offset``; short only at the end of the file."""
    filled = 0
    while filled < len(view):
        n = os.preadv(fd, [view[filled:]], offset + filled)
        if not n:
            break
        filled += n
    return filled


def copy_extents(
    src: int,
    dst: int,
    extents: Iterable[tuple[int, int]],
    *,
    total: int,
    progress: Callable[[int, int], None],
    should_cancel: Callable[[], bool],
) -> int:
    """Copy (offset, length) extents from ``src`` to the same offsets of ``dst``."""
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    done = 0
    for offset, length in extents:
        end = offset + length
        while offset < end:
            if should_cancel():
                raise Cancelled()
            n = pread_full(src, view[: min(CHUNK, end - offset)], offset)
            if not n:
                raise OSError(f"source ended at {offset} inside an extent ending at {end}")
            pwrite_all(dst, view[:n], offset)
            offset += n
            done += n
            progress(done, total)
    return done
