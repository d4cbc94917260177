"""What a duplicate scan finds: groups of identical files, counters, and the report.

Shared by :mod:`.duplicates` (the walk and the cached result) and :mod:`.compare`
(the hashing), so neither imports the other for the types.

These are written out by hand rather than as dataclasses: the warm re-scan (one
walk, one cache read) must not import ``dataclasses``, which brings ``inspect``,
``re`` and ``typing`` and would cost it about a tenth of its time
(``tests/organizer/test_hashcache.py`` checks the modules it loads).
"""

from __future__ import annotations

from collections.abc import Callable

from diskvault.organizer.hashcache import DEFAULT_ALGORITHM

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

Progress = Callable[[int, int], None]


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
