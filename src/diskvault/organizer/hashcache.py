"""Persistent content-hash cache keyed by (device, inode, size, mtime_ns).

A re-scan of an unchanged tree must read no file content: the walk's ``lstat``
gives the key, and one query per device against this SQLite file gives every hash the
duplicate finder needs. Head, tail and full hashes are separate columns so a
file that was only ever head-hashed (it lost its size group at that stage)
still saves that read next time.

The key is the inode, not the path, so renames and moves by the organizer keep
their hashes. One row per (device, inode): a changed file replaces its row, so
the cache grows with the number of distinct files ever seen, not with edits.
The algorithm is part of the key, so rows of different algorithms never mix.
"""

from __future__ import annotations

import os
import sqlite3
from collections import namedtuple

try:
    import xxhash

    HAVE_XXHASH = True
except ImportError:  # pragma: no cover - xxhash is a declared dependency
    HAVE_XXHASH = False

# Not ``typing`` at run time: with the ``re`` it pulls in, importing it costs
# 8 ms, 4% of a warm duplicate re-scan (see duplicates.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from pathlib import Path
    from typing import NamedTuple, Protocol

    class Hasher(Protocol):
        def update(self, data: bytes | memoryview, /) -> object: ...

        def digest(self) -> bytes: ...

    class CacheKey(Protocol):
        """What identifies a file's content version; :class:`~.walk.FileEntry` is one."""

        @property
        def dev(self) -> int: ...

        @property
        def ino(self) -> int: ...

        @property
        def size(self) -> int: ...

        @property
        def mtime_ns(self) -> int: ...

    class Hashes(NamedTuple):
        head: bytes | None = None
        tail: bytes | None = None
        full: bytes | None = None
else:
    Hashes = namedtuple("Hashes", "head tail full", defaults=(None, None, None), module=__name__)


def _blake2b() -> Hasher:
    import hashlib  # imported on use: xxh3 scans never need OpenSSL loaded

    return hashlib.blake2b(digest_size=32)


def _sha256() -> Hasher:
    import hashlib

    return hashlib.sha256()


# Duplicate detection needs a well-distributed hash, not a cryptographic one;
# xxh3 runs at memory speed. Callers that act on matches from untrusted trees
# (a crafted collision could make two different files look equal) can pick a
# cryptographic algorithm, or byte-compare before deleting.
ALGORITHMS: dict[str, Callable[[], Hasher]] = {"blake2b": _blake2b, "sha256": _sha256}
if HAVE_XXHASH:
    ALGORITHMS["xxh3_128"] = xxhash.xxh3_128
DEFAULT_ALGORITHM = "xxh3_128" if HAVE_XXHASH else "blake2b"

_INT64 = 1 << 63
_UINT64 = 1 << 64


def _signed(n: int) -> int:
    """SQLite integers are signed 64-bit; btrfs/NFS inodes can use all 64 bits."""
    return n - _UINT64 if n >= _INT64 else n


class HashCache:
    """A SQLite (WAL) file of head/tail/full hashes for one algorithm.

    Use from one thread at a time; the duplicate finder hashes in worker
    threads but reads and writes the cache from the calling thread only.
    """

    def __init__(self, path: str | os.PathLike[str], algorithm: str = DEFAULT_ALGORITHM) -> None:
        if algorithm not in ALGORITHMS:
            raise ValueError(f"unknown hash algorithm {algorithm!r}; one of {sorted(ALGORITHMS)}")
        self._path = os.fspath(path)
        self.algorithm = algorithm
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as exc:
            # It is only a cache: a corrupt or foreign file costs one cold scan.
            # stdlib logging (imported only here), not structlog: importing that
            # would double a short CLI scan's start-up; its stdlib bridge formats this.
            import logging
            from pathlib import Path

            logging.getLogger(__name__).warning(
                "hash cache %s unreadable (%s), recreating it", self._path, exc
            )
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self._path}{suffix}").unlink(missing_ok=True)
            self._db = self._open()

    @property
    def path(self) -> Path:
        from pathlib import Path  # imported on use: a scan needs none, and it loads re

        return Path(self._path)

    def _open(self) -> sqlite3.Connection:
        os.makedirs(os.path.dirname(os.path.abspath(self._path)), exist_ok=True)
        db = sqlite3.connect(self._path, timeout=30.0, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS hashes ("
                " algorithm TEXT NOT NULL, dev INTEGER NOT NULL, ino INTEGER NOT NULL,"
                " size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,"
                " head BLOB, tail BLOB, full BLOB,"
                " PRIMARY KEY (algorithm, dev, ino)) WITHOUT ROWID"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS results ("
                " scope TEXT PRIMARY KEY, fingerprint BLOB NOT NULL, payload BLOB NOT NULL)"
            )
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def lookup(self, keys: Iterable[CacheKey]) -> dict[tuple[int, int], Hashes]:
        """Hashes by (dev, ino) for the keys whose size and mtime still match.

        One query per device loads that device's rows into a dict; with one
        cache file per share (as the organizer keeps them) those are the
        share's rows. On 50,000 files this was four times faster than a join
        against a temp table of the keys, and per-key queries are slower still.
        """
        keys = list(keys)
        rows: dict[
            tuple[int, int], tuple[int, int, int, int, bytes | None, bytes | None, bytes | None]
        ]
        rows = {}
        for dev in {k.dev for k in keys}:
            cursor = self._db.execute(
                "SELECT dev, ino, size, mtime_ns, head, tail, full FROM hashes"
                " WHERE algorithm = ? AND dev = ?",
                (self.algorithm, _signed(dev)),
            )
            rows.update({(dev, row[1] % _UINT64): row for row in cursor.fetchall()})
        found: dict[tuple[int, int], Hashes] = {}
        for k in keys:
            key = (k.dev, k.ino)
            row = rows.get(key)
            if row is not None and row[2] == k.size and row[3] == k.mtime_ns:
                # tuple.__new__: a namedtuple's _make costs a fifth of this lookup.
                found[key] = tuple.__new__(Hashes, row[4:])
        return found

    def store(self, rows: Iterable[tuple[CacheKey, Hashes]]) -> int:
        """Insert or replace rows in one transaction; returns how many."""
        algorithm = self.algorithm
        params = [
            (algorithm, _signed(k.dev), _signed(k.ino), k.size, k.mtime_ns, h.head, h.tail, h.full)
            for k, h in rows
        ]
        if params:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany(
                    "INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?, ?, ?, ?, ?)", params
                )
        return len(params)

    def load_result(self, scope: str, fingerprint: bytes) -> bytes | None:
        """The whole-scan result stored for ``scope``, if taken from the same tree state."""
        row = self._db.execute(
            "SELECT fingerprint, payload FROM results WHERE scope = ?", (scope,)
        ).fetchone()
        if row is None or row[0] != fingerprint or not isinstance(row[1], bytes):
            return None
        return row[1]

    def store_result(self, scope: str, fingerprint: bytes, payload: bytes) -> None:
        """Keep one result per scope (roots, algorithm, options): the latest."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT OR REPLACE INTO results VALUES (?, ?, ?)", (scope, fingerprint, payload)
            )

    def __len__(self) -> int:
        (count,) = self._db.execute(
            "SELECT count(*) FROM hashes WHERE algorithm = ?", (self.algorithm,)
        ).fetchone()
        return int(count)

    def clear(self) -> None:
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM hashes WHERE algorithm = ?", (self.algorithm,))
            self._db.execute("DELETE FROM results")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> HashCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
