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

import hashlib
import json
import os
import threading
from array import array
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from diskvault.errors import NotFound
from diskvault.organizer.hashcache import ALGORITHMS, DEFAULT_ALGORITHM, HashCache, Hashes
from diskvault.organizer.walk import FileEntry, cancelled, normalize_roots, walk

if TYPE_CHECKING:
    from concurrent.futures import Future

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
    result_cached: bool = False  # the whole result came from the cache (tree unchanged)


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


Source = str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | Iterable[FileEntry]


def _entries(
    source: Source, errors: list[str], should_cancel: Callable[[], bool] | None
) -> tuple[Iterator[FileEntry], list[str] | None]:
    """The files to compare, and the normalized roots when ``source`` named roots."""

    def on_error(exc: OSError) -> None:
        errors.append(f"{exc.filename}: {exc.strerror or exc}")

    items = [source] if isinstance(source, str | os.PathLike) else source
    iterator = iter(items)
    first = next(iterator, None)
    if first is None:
        return iter(()), []
    if isinstance(first, FileEntry):
        rest = cast(Iterator[FileEntry], iterator)
        return (e for part in ([first], rest) for e in part), None
    roots = cast(list[str | os.PathLike[str]], [first, *iterator])
    for root in roots:
        if not os.path.exists(root):
            raise NotFound(kind="directory", id=str(root))
    return walk(roots, on_error=on_error, should_cancel=should_cancel), normalize_roots(roots)


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

    def hash_all(self, tasks: list[tuple[FileEntry, int]]) -> None:
        # Imported here: a warm re-scan never hashes, and this import is a
        # tenth of its start-up time.
        from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

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


def _fingerprint(entries: list[FileEntry]) -> bytes:
    """A digest of every file's path, size, mtime, ctime, device, inode and link count.

    Equal fingerprints mean the walk saw the same tree state, so the stored
    result still holds, under the assumption the hash cache already makes
    (content does not change while size and mtime stay), here strengthened by
    the ctime, which no one can set back.
    """
    digest = hashlib.blake2b(digest_size=16)
    if not entries:
        return digest.digest()
    # Column arrays: much faster than serializing 50,000 tuples one by one.
    paths, *numbers = zip(*entries, strict=True)
    digest.update("\0".join(paths).encode("utf-8", "surrogateescape"))
    for name, column in zip(FileEntry._fields[1:], numbers, strict=True):
        # Times may be negative (before 1970); the rest are unsigned 64-bit.
        digest.update(array("q" if name.endswith("time_ns") else "Q", column))
    return digest.digest()


def _payload(report: DuplicateReport) -> str:
    stats = report.stats
    return json.dumps(
        {
            "groups": [[g.size, g.hash, g.paths] for g in report.groups],
            "empty": [str(p) for p in report.empty_files],
            "candidates": stats.candidates,
            "hardlinks": stats.hardlinks,
            "hashes": stats.reads + stats.cache_hits,
        }
    )


def _from_payload(payload: str, stats: ScanStats, algorithm: str) -> DuplicateReport:
    data: dict[str, Any] = json.loads(payload)
    stats.candidates, stats.hardlinks = data["candidates"], data["hardlinks"]
    stats.cache_hits, stats.result_cached = data["hashes"], True
    groups = [DuplicateGroup(size, digest, tuple(paths)) for size, digest, paths in data["groups"]]
    return DuplicateReport(groups, [Path(p) for p in data["empty"]], stats, [], algorithm)


def find_duplicates(
    source: Source,
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

    With a cache, the whole result is stored too, under a fingerprint of the
    walk (:func:`_fingerprint`): a re-scan of an unchanged tree then costs one
    walk and one cache read, no grouping and no per-file lookups.
    """
    if cache is not None:
        if algorithm not in (None, cache.algorithm):
            raise ValueError(f"cache holds {cache.algorithm} hashes, not {algorithm}")
        algorithm = cache.algorithm
    algorithm = algorithm or DEFAULT_ALGORITHM
    stats = ScanStats()
    errors: list[str] = []
    scan = _Scan(cache, _Hasher(algorithm), workers, stats, errors, progress, should_cancel)

    walked, roots = _entries(source, errors, should_cancel)
    entries: list[FileEntry] = []
    for stats.files_scanned, e in enumerate(walked, 1):
        if stats.files_scanned % PROGRESS_EVERY_FILES == 0:
            scan.report_progress()
            scan.check_cancel()
        entries.append(e)
    scan.report_progress()

    scope = json.dumps([algorithm, min_size, roots])
    fingerprint = _fingerprint(entries) if cache is not None and not errors else None
    if cache is not None and fingerprint is not None:
        payload = cache.load_result(scope, fingerprint)
        if payload is not None:
            return _from_payload(payload, stats, algorithm)

    report = _compare(entries, scan, min_size, algorithm)
    if cache is not None and fingerprint is not None and not report.errors:
        cache.store_result(scope, fingerprint, _payload(report))
    return report


def _compare(
    entries: list[FileEntry], scan: _Scan, min_size: int, algorithm: str
) -> DuplicateReport:
    stats = scan.stats
    by_size: dict[int, list[FileEntry]] = defaultdict(list)
    empty: list[FileEntry] = []
    for e in entries:
        if e.size >= min_size:
            (by_size[e.size] if e.size else empty).append(e)

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
    return DuplicateReport(
        result, sorted(Path(e.path) for e in empty), stats, scan.errors, algorithm
    )
