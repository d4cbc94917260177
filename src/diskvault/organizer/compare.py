"""The comparing half of the duplicate finder: size groups, then head, tail and full hashes.

The approach of jdupes, rmlint and fclones: only files that share a size can
be equal, hard links to one inode are one file (like jdupes without ``-H``),
and each stage reads more of fewer files. A file up to ``SMALL_FILE`` bytes is
hashed whole in one read; a bigger one first by its head block, then by its
tail block, and only what still collides is read in full.

Reads go through a small thread pool: the reads release the GIL, several
requests in flight help SSDs and virtual disks, and the hashes of big buffers
release it too. Each worker reads with one buffer it allocated once, using
``preadv`` into a ``memoryview``. Work is sorted by inode, a cheap stand-in for
on-disk order. The cache is read in one query before hashing and written in
batches after each stage, and also when a scan is cancelled or fails, so work
done is never lost.

:mod:`.duplicates` imports this module only when its whole-result cache
misses, so a re-scan of an unchanged tree never loads it or its imports.
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from diskvault.organizer.hashcache import ALGORITHMS, HashCache, Hashes
from diskvault.organizer.report import DuplicateGroup, Progress, ScanStats
from diskvault.organizer.walk import FileEntry, cancelled

SMALL_FILE = 128 * 1024
BLOCK = 16 * 1024
BUFFER = 1024 * 1024
# A task batch for one worker: enough bytes or files to outweigh the
# scheduling cost of a future, small enough to keep both workers busy.
BATCH_BYTES = 8 * 1024 * 1024
BATCH_FILES = 256

HEAD, TAIL, FULL = 0, 1, 2
_PLAN_SMALL = (FULL,)
_PLAN_LARGE = (HEAD, TAIL, FULL)
_UNKNOWN = Hashes()

_Result = list[tuple[bytes | OSError, int]]
_Batch = list[tuple[FileEntry, int]]


class _Changed(OSError):
    """The file's size or mtime moved since the walk: its hash would be wrong."""


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

    def batch(self, tasks: Sequence[tuple[FileEntry, int]]) -> _Result:
        view = getattr(self._local, "view", None)
        if view is None:
            view = self._local.view = memoryview(bytearray(BUFFER))
        out: _Result = []
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
            raise cancelled()

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

    def hash_all(self, tasks: _Batch) -> None:
        tasks.sort(key=lambda t: (t[0].dev, t[0].ino))
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="dupes")
        try:
            running: dict[Future[_Result], _Batch] = {}
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
        self, running: dict[Future[_Result], _Batch], done: Iterable[Future[_Result]]
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


def _batches(tasks: _Batch) -> Iterator[_Batch]:
    batch: _Batch = []
    size = 0
    for task in tasks:
        batch.append(task)
        size += task[0].size if task[1] == FULL else BLOCK
        if size >= BATCH_BYTES or len(batch) >= BATCH_FILES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def compare(
    entries: list[FileEntry],
    *,
    cache: HashCache | None,
    stats: ScanStats,
    errors: list[str],
    min_size: int,
    algorithm: str,
    workers: int,
    progress: Progress | None,
    should_cancel: Callable[[], bool] | None,
) -> tuple[list[DuplicateGroup], list[str]]:
    """The duplicate groups among ``entries``, and the paths of the empty files.

    Unreadable files go to ``errors``; counters to ``stats``.
    """
    scan = _Scan(cache, _Hasher(algorithm), workers, stats, errors, progress, should_cancel)
    by_size: dict[int, list[FileEntry]] = defaultdict(list)
    empty: list[str] = []
    for e in entries:
        if e.size >= min_size:
            if e.size:
                by_size[e.size].append(e)
            else:
                empty.append(e.path)

    groups: list[tuple[list[FileEntry], tuple[int, ...]]] = []
    for size, same_size in by_size.items():
        if len(same_size) > 1:
            distinct = _one_per_inode(same_size, stats)
            if len(distinct) > 1:
                groups.append((distinct, _PLAN_SMALL if size <= SMALL_FILE else _PLAN_LARGE))
    stats.candidates = sum(len(group) for group, _ in groups)

    scan.load_cache(e for group, _ in groups for e in group)
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
    # Sorted by components, as the Path objects the report makes of them sort.
    return result, sorted(empty, key=lambda path: path.split(os.sep))


def _full_hex(scan: _Scan, e: FileEntry) -> str:
    full = scan.known[(e.dev, e.ino)].full
    assert full is not None  # a group survives the full stage only with full hashes
    return full.hex()
