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
from diskvault.organizer.report import DuplicateGroup, DuplicateReport, Progress, ScanStats
from diskvault.organizer.walk import FileEntry, cancelled, normalize_roots, walk_rows

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    from diskvault.organizer.walk import Row

    Source = str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | Iterable[FileEntry]

PROGRESS_EVERY_FILES = 4096
# Rows per chunk when the caller walked (the walk makes one per directory).
CHUNK_ROWS = 4096
# Part of a stored result's scope: bump it when the payload's layout changes,
# so that an old payload is never decoded as a new one.
RESULT_FORMAT = 2

_new = tuple.__new__  # builds a FileEntry without its Python-level __new__


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
