"""Raw files or block devices with no change tracking.

Every run reads the whole disk and hashes it per 64 KiB cluster (xxh3-128).
The hash map is stored beside each restore point (``.hashmap``); an incremental
writes only the clusters whose hash differs from the previous point's map. A
missing or damaged map makes the run a full.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import ClassVar

import xxhash

from diskvault.backups.errors import SourceUnavailable
from diskvault.backups.repository import hashmap_path, partial
from diskvault.backups.sources.base import (
    Copied,
    Kind,
    PathDisks,
    Plan,
    Previous,
    RunOptions,
    create_target,
)
from diskvault.backups.sources.daemon import start_daemon
from diskvault.backups.sources.pump import CHUNK, pread_full, target_view
from diskvault.backups.sources.qcow2 import common_reason
from diskvault.fsutil import pwrite_all
from diskvault.tools.process import Cancelled
from diskvault.tools.qsd import QsdServer

CLUSTER = 64 * 1024
DIGEST = 16
MAGIC = b"DVHASHMAP1\n"
HEADER = struct.Struct("<IQ")  # cluster size, disk size


def file_digest(path: Path) -> str:
    with open(path, "rb") as fh:
        return xxhash.xxh3_128_hexdigest(fh.read())


def load_hashmap(path: Path, size: int) -> bytes | None:
    """The digests of a stored map, or None if it does not describe a disk of ``size``."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    head = len(MAGIC) + HEADER.size
    if not data.startswith(MAGIC) or len(data) < head:
        return None
    cluster, disk_size = HEADER.unpack_from(data, len(MAGIC))
    count = -(-disk_size // cluster)
    if cluster != CLUSTER or disk_size != size or len(data) != head + count * DIGEST:
        return None
    return data[head:]


def _size(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


class RawSession:
    def __init__(self, name: str, index: int, path: Path, opts: RunOptions) -> None:
        self.name, self.index, self.path, self.opts = name, index, path, opts
        self._server: QsdServer | None = None
        self._previous_map: bytes | None = None

    def plan(self, want: Kind, previous: Previous | None) -> Plan:
        try:
            size = _size(self.path)
        except OSError as exc:
            raise SourceUnavailable(source=self.name, disk=self.index, detail=str(exc)) from exc
        if want == "full":
            return Plan("full", size)
        reason = common_reason(previous, size) or self._map_problem(previous, size)
        return Plan("full", size, reason) if reason else Plan("incremental", size)

    def _map_problem(self, previous: Previous | None, size: int) -> str | None:
        assert previous is not None
        if previous.tracking.get("kind") != "hashmap":
            return f"restore point {previous.backup_id} has no hash map on record"
        path = hashmap_path(previous.image)
        if not path.exists():
            return f"the hash map of restore point {previous.backup_id} is missing"
        if file_digest(path) != previous.tracking.get("digest"):
            return f"the hash map of restore point {previous.backup_id} does not match its record"
        self._previous_map = load_hashmap(path, size)
        if self._previous_map is None:
            return f"the hash map of restore point {previous.backup_id} is damaged"
        return None

    def copy(self, target: Path, plan: Plan, previous: Previous | None) -> Copied:
        create_target(target, plan, previous, self.opts)
        server = self._server = start_daemon(self.opts.workdir, self.opts.settings, "raw")
        digests = bytearray()
        written = 0
        incremental = previous if plan.backup_type == "incremental" else None
        short = self.opts.backup_id[:12]
        with target_view(server, target, short, incremental, self.opts.storage) as dst:
            src = os.open(self.path, os.O_RDONLY)
            try:
                written = self._pump(src, dst, plan, digests)
            finally:
                os.close(src)
        out = partial(hashmap_path(target.with_name(target.name.removesuffix(".partial"))))
        # The engine fsyncs it with the image, while checksumming both.
        out.write_bytes(MAGIC + HEADER.pack(CLUSTER, plan.virtual_size) + digests)
        digest = file_digest(out)
        tracking = {"kind": "hashmap", "digest": digest, "cluster_size": CLUSTER}
        return Copied(tracking, written, change_id=digest, extra={".hashmap": out})

    def _pump(self, src: int, dst: int, plan: Plan, digests: bytearray) -> int:
        """Read everything, hash every cluster, write the clusters that changed."""
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        zero = memoryview(bytes(CLUSTER))
        previous = self._previous_map if plan.backup_type == "incremental" else None
        key = self.opts.storage.key
        # In an encrypted repository the map's hashes are seeded from the key, so they
        # cannot be used to confirm a guess of a cluster's content without it.
        seed = key.hash_seed if key else 0
        offset = written = 0
        while offset < plan.virtual_size:
            if self.opts.should_cancel():
                raise Cancelled()
            n = pread_full(src, view[: min(CHUNK, plan.virtual_size - offset)], offset)
            if not n:
                raise OSError(f"{self.path} ended at {offset}, expected {plan.virtual_size}")
            run_start = -1
            for pos in range(0, n + CLUSTER, CLUSTER):
                changed = False
                if pos < n:
                    cluster = view[pos : min(pos + CLUSTER, n)]
                    digest = xxhash.xxh3_128_digest(cluster, seed)
                    index = (offset + pos) // CLUSTER
                    digests += digest
                    if previous is not None:
                        changed = previous[index * DIGEST : (index + 1) * DIGEST] != digest
                    else:  # a fresh full reads zeros where nothing is written
                        changed = cluster != zero[: len(cluster)]
                if changed and run_start < 0:
                    run_start = pos
                elif not changed and run_start >= 0:
                    pwrite_all(dst, view[run_start : min(pos, n)], offset + run_start)
                    written += min(pos, n) - run_start
                    run_start = -1
            offset += n
            self.opts.progress(offset, plan.virtual_size)
        return written

    def commit(self, keep: object) -> None:
        return None  # the hash map travels with the restore point

    def close(self) -> None:
        if self._server is not None:
            self._server.stop()


class RawSource(PathDisks):
    """``{"disks": ["/dev/vg/vm1", "/srv/disk.raw"]}`` (or ``"path"``)."""

    kind: ClassVar[str] = "raw"

    def open_disk(self, index: int, opts: RunOptions) -> RawSession:
        return RawSession(self.name, index, self.paths[index], opts)
