"""Duplicate finder: one walk, then size groups and content hashes, with a persistent cache.

How files are compared (size, inode, head, tail and full hashes, in a thread
pool) is in :mod:`.compare`. Empty files never form a group (deleting one
frees nothing; jdupes needs ``-z`` for them) and are listed apart in
:attr:`DuplicateReport.empty_files`.

With a cache, the whole result is stored too, under a fingerprint of the walk
(:class:`_Walked`): a re-scan of an unchanged tree then costs one walk and
one cache read, no grouping and no per-file lookups. That re-scan is the
common case and takes a fifth of a second on 50,000 files, so what it imports
counts as much as what it runs: this module, :mod:`.walk` and
:mod:`.hashcache` use only modules that the interpreter or ``sqlite3`` load
anyway. ``typing``, ``re``, ``json``, ``dataclasses``, ``pathlib`` and
``hashlib`` cost it about 30 ms, a sixth; :mod:`.compare` and its thread pool
are imported only when the stored result does not apply.
"""

from __future__ import annotations

import marshal
import os
from collections.abc import Callable
from itertools import chain

from diskvault.organizer.hashcache import ALGORITHMS, DEFAULT_ALGORITHM, HashCache
from diskvault.organizer.walk import FileEntry, cancelled, normalize_roots, walk_rows

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path
    from typing import Any

    from diskvault.organizer.walk import Row

    Source = str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | Iterable[FileEntry]

PROGRESS_EVERY_FILES = 4096
# Rows per chunk when the caller walked (the walk makes one per directory).
CHUNK_ROWS = 4096
# Part of a stored result's scope: bump it when the payload's layout changes,
# so that an old payload is never decoded as a new one.
RESULT_FORMAT = 2

Progress = Callable[[int, int], None]
_new = tuple.__new__  # builds a FileEntry without its Python-level __new__


class _Record:
    """``__repr__`` and ``__eq__`` over ``_fields``, as dataclasses would write them."""

    _fields: tuple[str, ...] = ()
    __slots__ = ()

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._fields)

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__name__}({fields})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, _Record)
        return self._values() == other._values()


class DuplicateGroup(_Record):
    """Files (one path per inode, sorted) with identical content of ``size`` bytes."""

    _fields = ("size", "hash", "paths")
    __slots__ = ("_files", "hash", "paths", "size")

    def __init__(self, size: int, hash: str, paths: tuple[str, ...]) -> None:
        self.size = size
        self.hash = hash
        self.paths = paths
        self._files: list[Path] | None = None

    def __hash__(self) -> int:
        return hash(self._values())

    @property
    def files(self) -> list[Path]:
        # Built on demand: on a big tree, Path objects for every duplicate
        # cost more than the whole cached re-scan otherwise does.
        if self._files is None:
            from pathlib import Path

            self._files = [Path(p) for p in self.paths]
        return self._files

    @property
    def wasted_bytes(self) -> int:
        return self.size * (len(self.paths) - 1)


class ScanStats(_Record):
    """What a scan did; ``vars()`` gives every counter."""

    _fields = (
        "files_scanned",
        "candidates",
        "hardlinks",
        "reads",
        "bytes_read",
        "cache_hits",
        "result_cached",
    )

    def __init__(self) -> None:
        self.files_scanned = 0
        self.candidates = 0  # files sharing their size with another inode
        self.hardlinks = 0  # paths skipped because another path has the same inode
        self.reads = 0  # head, tail or full reads done
        self.bytes_read = 0
        self.cache_hits = 0  # head, tail or full hashes served by the cache
        self.result_cached = False  # the whole result came from the cache (tree unchanged)


class DuplicateReport(_Record):
    """Groups (most wasted bytes first), empty files, counters and unreadable files."""

    _fields = ("groups", "empty_paths", "stats", "errors", "algorithm")

    def __init__(
        self,
        groups: list[DuplicateGroup],
        empty_paths: list[str],
        stats: ScanStats,
        errors: list[str] | None = None,
        algorithm: str = DEFAULT_ALGORITHM,
    ) -> None:
        self.groups = groups
        self.empty_paths = empty_paths
        self.stats = stats
        self.errors = [] if errors is None else errors
        self.algorithm = algorithm

    @property
    def empty_files(self) -> list[Path]:
        from pathlib import Path

        return [Path(p) for p in self.empty_paths]

    @property
    def wasted_bytes(self) -> int:
        return sum(g.wasted_bytes for g in self.groups)


class _Walked:
    """Every file's row as the walk saw it, and a fingerprint of them all.

    Equal fingerprints mean the walk saw the same tree state (every file's
    path, size, mtime, device, inode, link count and ctime), so the stored
    result still holds, under the assumption the hash cache already makes
    (content does not change while size and mtime stay), here strengthened by
    the ctime, which no one can set back. The digest is the scan's own
    algorithm: whoever needs collision resistance against crafted trees picks
    a cryptographic one for both.

    The rows are hashed as marshal chunks, one C call per directory, where
    packing them field by field in Python cost a tenth of the re-scan; version
    2 writes no back-references, so equal rows always give equal bytes. The
    chunks are what is kept, too: a re-scan that finds its stored result never
    looks at the rows again, and 50,000 rows cost more to keep as tuples than
    to serialize.
    """

    def __init__(
        self,
        algorithm: str,
        stats: ScanStats,
        progress: Progress | None,
        should_cancel: Callable[[], bool] | None,
    ) -> None:
        self._digest = ALGORITHMS[algorithm]()
        self._chunks: list[bytes] = []
        self._stats = stats
        self._progress = progress
        self.should_cancel = should_cancel

    def add(self, rows: list[Row]) -> None:
        chunk = marshal.dumps(rows, 2)
        self._digest.update(chunk)
        self._chunks.append(chunk)
        before = self._stats.files_scanned
        self._stats.files_scanned += len(rows)
        if before // PROGRESS_EVERY_FILES != self._stats.files_scanned // PROGRESS_EVERY_FILES:
            self.report()
            if self.should_cancel is not None and self.should_cancel():
                raise cancelled()

    def report(self) -> None:
        if self._progress is not None:
            self._progress(self._stats.files_scanned, 0)

    def fingerprint(self) -> bytes:
        return self._digest.digest()

    def entries(self) -> list[FileEntry]:
        entries: list[FileEntry] = []
        for chunk in self._chunks:
            rows = marshal.loads(chunk)  # noqa: S302 - made by add() above
            entries += [_new(FileEntry, row) for row in rows]
        return entries


def _walk(source: Source, walked: _Walked, errors: list[str]) -> list[str] | None:
    """Feed every file of ``source`` to ``walked``; the normalized roots, if it named roots."""

    def on_error(exc: OSError) -> None:
        errors.append(f"{exc.filename}: {exc.strerror or exc}")

    items = [source] if isinstance(source, str | os.PathLike) else source
    iterator = iter(items)
    first = next(iterator, None)
    roots: list[str] | None = None
    if isinstance(first, FileEntry):
        rows: list[Row] = []
        for e in chain((first,), iterator):
            rows.append(tuple(e))  # type: ignore[arg-type]  # a FileEntry's fields
            if len(rows) == CHUNK_ROWS:
                walked.add(rows)
                rows = []
        if rows:
            walked.add(rows)
    elif first is not None:
        named = [first, *iterator]
        for root in named:
            if not os.path.exists(root):  # type: ignore[arg-type]  # roots after a root
                from diskvault.errors import NotFound

                raise NotFound(kind="directory", id=str(root))
        roots = normalize_roots(named)  # type: ignore[arg-type]
        for rows in walk_rows(roots, on_error=on_error, should_cancel=walked.should_cancel):
            walked.add(rows)
    else:
        roots = []
    walked.report()
    return roots


def _payload(report: DuplicateReport) -> bytes:
    stats = report.stats
    return marshal.dumps(
        (
            [(g.size, g.hash, g.paths) for g in report.groups],
            report.empty_paths,
            stats.candidates,
            stats.hardlinks,
            stats.reads + stats.cache_hits,
        )
    )


def _from_payload(
    payload: bytes | None, stats: ScanStats, algorithm: str
) -> DuplicateReport | None:
    if payload is None:
        return None
    try:
        # The payload is one this module wrote to diskvault's own cache file,
        # as trusted as the hashes next to it that decide what is a duplicate.
        data = marshal.loads(payload)  # noqa: S302
        groups, empty, candidates, hardlinks, hashes = data
        result = [DuplicateGroup(size, digest, paths) for size, digest, paths in groups]
    except (EOFError, ValueError, TypeError):
        return None  # unreadable: recompute, and store a good one
    stats.candidates, stats.hardlinks = candidates, hardlinks
    stats.cache_hits, stats.result_cached = hashes, True
    return DuplicateReport(result, empty, stats, [], algorithm)


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
    walk (:class:`_Walked`): a re-scan of an unchanged tree then costs one
    walk and one cache read, no grouping and no per-file lookups.
    """
    if cache is not None:
        if algorithm not in (None, cache.algorithm):
            raise ValueError(f"cache holds {cache.algorithm} hashes, not {algorithm}")
        algorithm = cache.algorithm
    algorithm = algorithm or DEFAULT_ALGORITHM
    stats = ScanStats()
    errors: list[str] = []
    walked = _Walked(algorithm, stats, progress, should_cancel)
    roots = _walk(source, walked, errors)

    scope = repr((RESULT_FORMAT, algorithm, min_size, roots))
    fingerprint = walked.fingerprint() if cache is not None and not errors else None
    if cache is not None and fingerprint is not None:
        report = _from_payload(cache.load_result(scope, fingerprint), stats, algorithm)
        if report is not None:
            return report

    from diskvault.organizer.compare import compare

    groups, empty = compare(
        walked.entries(),
        cache=cache,
        stats=stats,
        errors=errors,
        min_size=min_size,
        algorithm=algorithm,
        workers=workers,
        progress=progress,
        should_cancel=should_cancel,
    )
    report = DuplicateReport(groups, empty, stats, errors, algorithm)
    if cache is not None and fingerprint is not None and not report.errors:
        cache.store_result(scope, fingerprint, _payload(report))
    return report
