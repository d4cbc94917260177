"""Duplicate finder: size groups, then head, tail and full hashes, cached.

The approach of jdupes, rmlint and fclones: only files that share a size can
be equal, hard links to one inode are one file (like jdupes without ``-H``),
and each stage reads more of fewer files. A file up to ``SMALL_FILE`` bytes is
hashed whole in one read; a bigger one first by its head block, then by its
tail block, and only what still collides is read in full. Empty files never
form a group (deleting one frees nothing; jdupes needs ``-z`` for them) and are
listed apart in :attr:`DuplicateReport.empty_files`.

Reads go through a small thread pool: the reads release the GIL, several
requests in flight help SSDs and virtual disks, and the hashes of big buffers
release it too. Each worker reads with one buffer it allocated once, using
``preadv`` into a ``memoryview``. Work is sorted by inode, a cheap stand-in for
on-disk order. The cache is read in one query before hashing and written in
batches after each stage, and also when a scan is cancelled or fails, so work
done is never lost.
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import cast

from diskvault.errors import NotFound
from diskvault.organizer.hashcache import ALGORITHMS, DEFAULT_ALGORITHM, HashCache, Hashes
from diskvault.organizer.walk import FileEntry, walk
from diskvault.tools.process import Cancelled

SMALL_FILE = 128 * 1024
BLOCK = 16 * 1024
BUFFER = 1024 * 1024
# A task batch for one worker: enough bytes or files to outweigh the
# scheduling cost of a future, small enough to keep both workers busy.
BATCH_BYTES = 8 * 1024 * 1024
BATCH_FILES = 256
PROGRESS_EVERY_FILES = 4096

HEAD, TAIL, FULL = 0, 1, 2
_PLAN_SMALL = (FULL,)
_PLAN_LARGE = (HEAD, TAIL, FULL)

Progress = Callable[[int, int], None]
_UNKNOWN = Hashes()


@dataclass(frozen=True)
class DuplicateGroup:
    """Files (one path per inode, sorted) with identical content of ``size`` bytes."""

    size: int
    hash: str
    paths: tuple[str, ...]

    @cached_property
    def files(self) -> list[Path]:
        # Built on demand: on a big tree, Path objects for every duplicate
        # cost more than the whole cached re-scan otherwise does.
        return [Path(p) for p in self.paths]

    @property
    def wasted_bytes(self) -> int:
        return self.size * (len(self.paths) - 1)


@dataclass
class ScanStats:
    files_scanned: int = 0
    candidates: int = 0  # files sharing their size with another inode
    hardlinks: int = 0  # paths skipped because another path has the same inode
    reads: int = 0  # head, tail or full reads done
    bytes_read: int = 0
    cache_hits: int = 0  # head, tail or full hashes served by the cache


@dataclass
class DuplicateReport:
    groups: list[DuplicateGroup]
    empty_files: list[Path]
    stats: ScanStats
    errors: list[str] = field(default_factory=list)
    algorithm: str = DEFAULT_ALGORITHM

    @property
    def wasted_bytes(self) -> int:
        return sum(g.wasted_bytes for g in self.groups)


class _Changed(OSError):
    """The file's size or mtime moved since the walk: its hash would be wrong."""


def _entries(
    source: str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | Iterable[FileEntry],
    errors: list[str],
    should_cancel: Callable[[], bool] | None,
) -> Iterator[FileEntry]:
    def on_error(exc: OSError) -> None:
        errors.append(f"{exc.filename}: {exc.strerror or exc}")

    items = [source] if isinstance(source, str | os.PathLike) else source
    iterator = iter(items)
    first = next(iterator, None)
    if first is None:
        return
    if isinstance(first, FileEntry):
        yield first
        yield from cast(Iterator[FileEntry], iterator)
        return
    roots = cast(list[str | os.PathLike[str]], [first, *iterator])
    for root in roots:
        if not os.path.exists(root):
            raise NotFound(kind="directory", id=str(root))
    yield from walk(roots, on_error=on_error, should_cancel=should_cancel)


def _one_per_inode(entries: list[FileEntry], stats: ScanStats) -> list[FileEntry]:
    """Keep the smallest path of each inode, so reports are deterministic."""
    if len({(e.dev, e.ino) for e in entries}) == len(entries):
        return entries
    by_inode: dict[tuple[int, int], FileEntry] = {}
    for e in entries:
        seen = by_inode.get((e.dev, e.ino))
        if seen is None:
            by_inode[(e.dev, e.ino)] = e
        else:
            stats.hardlinks += 1
            if e.path < seen.path:
                by_inode[(e.dev, e.ino)] = e
    return list(by_inode.values())


class _Hasher:
    """Worker-side reads; one buffer per thread, allocated on first use."""

    def __init__(self, algorithm: str) -> None:
        self._new = ALGORITHMS[algorithm]
        self._local = threading.local()

    def batch(self, tasks: Sequence[tuple[FileEntry, int]]) -> list[tuple[bytes | OSError, int]]:
        view = getattr(self._local, "view", None)
        if view is None:
            view = self._local.view = memoryview(bytearray(BUFFER))
        out: list[tuple[bytes | OSError, int]] = []
        for entry, kind in tasks:
            try:
                out.append(self._hash(entry, kind, view))
            except OSError as exc:
                out.append((exc, 0))
        return out

    def _hash(self, e: FileEntry, kind: int, view: memoryview) -> tuple[bytes, int]:
        fd = os.open(e.path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            st = os.fstat(fd)
            if st.st_size != e.size or st.st_mtime_ns != e.mtime_ns or st.st_ino != e.ino:
                raise _Changed(0, "changed during scan", e.path)
            if kind == FULL:
                offset, length = 0, e.size
                if length > BUFFER:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            else:
                offset, length = (0 if kind == HEAD else e.size - BLOCK), BLOCK
            h = self._new()
            end = offset + length
            while offset < end:
                n = os.preadv(fd, [view[: min(end - offset, BUFFER)]], offset)
                if n == 0:
                    raise _Changed(0, "shrank during scan", e.path)
                h.update(view[:n])
                offset += n
            return h.digest(), length
        finally:
            os.close(fd)


@dataclass
class _Scan:
    cache: HashCache | None
    hasher: _Hasher
    workers: int
    stats: ScanStats
    errors: list[str]
    progress: Progress | None
    should_cancel: Callable[[], bool] | None
    known: dict[tuple[int, int], Hashes] = field(default_factory=dict)
    dirty: dict[tuple[int, int], FileEntry] = field(default_factory=dict)

    def check_cancel(self) -> None:
        if self.should_cancel is not None and self.should_cancel():
            raise Cancelled()

    def report_progress(self) -> None:
        if self.progress is not None:
            self.progress(self.stats.files_scanned, self.stats.bytes_read)

    def load_cache(self, entries: Iterable[FileEntry]) -> None:
        if self.cache is not None:
            self.known = self.cache.lookup(entries)

    def flush_cache(self) -> None:
        if self.cache is not None and self.dirty:
            self.cache.store((e, self.known[key]) for key, e in self.dirty.items())
        self.dirty.clear()

    def refine(
        self, groups: list[tuple[list[FileEntry], tuple[int, ...]]]
    ) -> list[list[FileEntry]]:
        """Run each group through its plan of stages; return the surviving groups."""
        known = self.known
        final: list[list[FileEntry]] = []
        while groups:
            tasks = [
                (e, plan[0])
                for entries, plan in groups
                for e in entries
                if known.get((e.dev, e.ino), _UNKNOWN)[plan[0]] is None
            ]
            self.stats.cache_hits += sum(len(entries) for entries, _ in groups) - len(tasks)
            self.hash_all(tasks)
            following: list[tuple[list[FileEntry], tuple[int, ...]]] = []
            for entries, plan in groups:
                kind = plan[0]
                split: dict[bytes, list[FileEntry]] = {}
                for e in entries:
                    digest = known.get((e.dev, e.ino), _UNKNOWN)[kind]
                    if digest is not None:  # None: unreadable, already in errors
                        split.setdefault(digest, []).append(e)
                for same in split.values():
                    if len(same) < 2:
                        continue
                    if len(plan) == 1:
                        final.append(same)
                    else:
                        following.append((same, plan[1:]))
            groups = following
            self.flush_cache()
        return final

    def hash_all(self, tasks: list[tuple[FileEntry, int]]) -> None:
        tasks.sort(key=lambda t: (t[0].dev, t[0].ino))
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="dupes")
        try:
            running: dict[Future[list[tuple[bytes | OSError, int]]], list[tuple[FileEntry, int]]]
            running = {}
            for batch in _batches(tasks):
                # Keep only a few batches in flight so cancellation is prompt.
                while len(running) >= 2 * self.workers:
                    self.collect(running, wait(running, return_when=FIRST_COMPLETED).done)
                running[pool.submit(self.hasher.batch, batch)] = batch
            while running:
                self.collect(running, wait(running, return_when=FIRST_COMPLETED).done)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def collect(
        self,
        running: dict[Future[list[tuple[bytes | OSError, int]]], list[tuple[FileEntry, int]]],
        done: Iterable[Future[list[tuple[bytes | OSError, int]]]],
    ) -> None:
        for future in done:
            batch = running.pop(future)
            for (e, kind), (result, nbytes) in zip(batch, future.result(), strict=True):
                key = (e.dev, e.ino)
                if isinstance(result, OSError):
                    self.errors.append(f"{e.path}: {result.strerror or result}")
                    continue
                self.stats.reads += 1
                self.stats.bytes_read += nbytes
                self.known[key] = self.known.get(key, _UNKNOWN)._replace(
                    **{Hashes._fields[kind]: result}
                )
                self.dirty[key] = e
        self.report_progress()
        self.check_cancel()


def _batches(tasks: list[tuple[FileEntry, int]]) -> Iterator[list[tuple[FileEntry, int]]]:
    batch: list[tuple[FileEntry, int]] = []
    size = 0
    for task in tasks:
        batch.append(task)
        size += task[0].size if task[1] == FULL else BLOCK
        if size >= BATCH_BYTES or len(batch) >= BATCH_FILES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _full_hex(scan: _Scan, e: FileEntry) -> str:
    full = scan.known[(e.dev, e.ino)].full
    assert full is not None  # a group survives the full stage only with full hashes
    return full.hex()


def find_duplicates(
    source: str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | Iterable[FileEntry],
    *,
    cache: HashCache | None = None,
    progress: Progress | None = None,
    should_cancel: Callable[[], bool] | None = None,
    min_size: int = 0,
    algorithm: str | None = None,
    workers: int = 4,
) -> DuplicateReport:
    """Find groups of files with identical content.

    ``source`` is a root (directory or file), a list of roots, or an iterable
    of :class:`FileEntry` already walked by the caller. ``progress`` receives
    (files walked, bytes read) as both grow; ``should_cancel`` is polled and
    raises :class:`~diskvault.tools.process.Cancelled`, after saving the
    hashes computed so far. Files smaller than ``min_size`` are ignored. The
    hash is the cache's algorithm, else ``algorithm``, else the default.
    """
    if cache is not None:
        if algorithm not in (None, cache.algorithm):
            raise ValueError(f"cache holds {cache.algorithm} hashes, not {algorithm}")
        algorithm = cache.algorithm
    algorithm = algorithm or DEFAULT_ALGORITHM
    stats = ScanStats()
    errors: list[str] = []
    scan = _Scan(cache, _Hasher(algorithm), workers, stats, errors, progress, should_cancel)

    by_size: dict[int, list[FileEntry]] = defaultdict(list)
    empty: list[FileEntry] = []
    for stats.files_scanned, e in enumerate(_entries(source, errors, should_cancel), 1):
        if stats.files_scanned % PROGRESS_EVERY_FILES == 0:
            scan.report_progress()
            scan.check_cancel()
        if e.size >= min_size:
            (by_size[e.size] if e.size else empty).append(e)
    scan.report_progress()

    groups: list[tuple[list[FileEntry], tuple[int, ...]]] = []
    for size, entries in by_size.items():
        if len(entries) > 1:
            distinct = _one_per_inode(entries, stats)
            if len(distinct) > 1:
                groups.append((distinct, _PLAN_SMALL if size <= SMALL_FILE else _PLAN_LARGE))
    stats.candidates = sum(len(entries) for entries, _ in groups)

    scan.load_cache(e for entries, _ in groups for e in entries)
    try:
        found = scan.refine(groups)
    finally:
        scan.flush_cache()
    scan.report_progress()

    result = [
        DuplicateGroup(same[0].size, _full_hex(scan, same[0]), tuple(sorted(e.path for e in same)))
        for same in found
    ]
    result.sort(key=lambda g: (-g.wasted_bytes, g.paths[0]))
    return DuplicateReport(result, sorted(Path(e.path) for e in empty), stats, errors, algorithm)
