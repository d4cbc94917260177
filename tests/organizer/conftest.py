"""Organizer fixtures: a small real tree with every kind of duplicate case."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from diskvault.config import Settings
from diskvault.db import migrate
from diskvault.organizer.hashcache import HashCache

LARGE = 300 * 1024  # above duplicates.SMALL_FILE, so head/tail/full stages apply


@dataclass(frozen=True)
class SampleTree:
    root: Path
    groups: set[frozenset[Path]]  # the duplicate groups a correct finder reports
    small_size: int
    large_size: int
    empty: list[Path]


def put(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def build_sample_tree(root: Path) -> SampleTree:
    rng = random.Random(7)
    small = b"hello world\n" * 10
    one = put(root / "a" / "one.txt", small)
    copy = put(root / "b" / "one-copy.txt", small)
    again = put(root / "c" / "deep" / "one-again.txt", small)
    put(root / "a" / "other.txt", b"HELLO WORLD\n" * 10)  # same size, different bytes
    unique = put(root / "a" / "unique.txt", b"only one of these")
    os.link(one, root / "hard-one.txt")  # same inode: one file, not a duplicate
    os.link(unique, root / "hard-unique.txt")
    (root / "link-to-one").symlink_to(one)
    (root / "link-to-one-again").symlink_to(one)

    big = rng.randbytes(LARGE)
    big1 = put(root / "big1.bin", big)
    big2 = put(root / "sub" / "big2.bin", big)
    tail = bytearray(rng.randbytes(LARGE))
    put(root / "tail-a.bin", bytes(tail))
    tail[-1] ^= 0xFF
    put(root / "tail-b.bin", bytes(tail))
    middle = bytearray(rng.randbytes(LARGE))
    put(root / "mid-a.bin", bytes(middle))
    middle[LARGE // 2] ^= 0xFF
    put(root / "mid-b.bin", bytes(middle))

    empty = [put(root / "empty1", b""), put(root / "e" / "empty2", b"")]
    return SampleTree(
        root=root,
        groups={frozenset({one, copy, again}), frozenset({big1, big2})},
        small_size=len(small),
        large_size=LARGE,
        empty=sorted(empty),
    )


@pytest.fixture(scope="session")
def sample_tree(tmp_path_factory: pytest.TempPathFactory) -> SampleTree:
    """Read-only: tests that modify files build their own with ``build_sample_tree``."""
    return build_sample_tree(tmp_path_factory.mktemp("sample"))


@pytest.fixture
def fresh_tree(tmp_path: Path) -> SampleTree:
    """A private copy of the sample tree, for tests that modify it."""
    return build_sample_tree(tmp_path / "tree")


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[HashCache]:
    with HashCache(tmp_path / "cache" / "hashes.sqlite") as c:
        yield c


@pytest.fixture
def migrated(settings: Settings) -> Settings:
    """Settings on a migrated database (SQLite and PostgreSQL), for journal tests."""
    migrate.upgrade(settings.DATABASE_URL)
    return settings
