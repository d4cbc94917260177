"""The extents digest: equal to its documented definition, and reading only data."""

from __future__ import annotations

import os
import random
from pathlib import Path

from diskvault.images import digest
from support.images_util import reference_digest

MiB = 1024 * 1024
TiB = 1024 * 1024 * MiB


def reference(path: Path) -> str:
    return reference_digest(path.read_bytes())


def sparse_file(path: Path, size: int, writes: list[tuple[int, bytes]]) -> Path:
    with open(path, "wb") as fh:
        fh.truncate(size)
        for offset, data in writes:
            fh.seek(offset)
            fh.write(data)
    return path


def test_matches_its_definition_at_any_alignment(tmp_path: Path) -> None:
    rng = random.Random(7)
    for i in range(6):
        size = rng.randrange(1, 5 * MiB)
        writes = [(rng.randrange(size), os.urandom(rng.randrange(1, 200_000))) for _ in range(5)]
        writes.append((0, bytes(70_000)))  # allocated zeros count as zeros
        path = sparse_file(tmp_path / f"f{i}", size, writes)
        if path.stat().st_size != size:  # a write past the end grew it
            size = path.stat().st_size
        got, _ = digest.file_digest(path)
        assert got == reference(path)


def test_streamed_pieces_give_the_same_digest(tmp_path: Path) -> None:
    data = os.urandom(300_000)
    path = sparse_file(tmp_path / "f", 3 * MiB + 5, [(100, data), (2 * MiB + 17, data)])
    hasher = digest.ExtentHasher()
    for offset in (100, 2 * MiB + 17):  # in odd-sized pieces, as a stream's records come
        for at in range(0, len(data), 12_345):
            hasher.update(offset + at, data[at : at + 12_345])
    assert hasher.hexdigest(3 * MiB + 5) == reference(path)


def test_differs_when_data_moves_or_the_size_changes(tmp_path: Path) -> None:
    a = sparse_file(tmp_path / "a", 2 * MiB, [(0, b"x")])
    b = sparse_file(tmp_path / "b", 2 * MiB, [(65536, b"x")])
    c = sparse_file(tmp_path / "c", 2 * MiB + 512, [(0, b"x")])
    assert len({digest.file_digest(p)[0] for p in (a, b, c)}) == 3


def test_a_tebibyte_file_is_hashed_by_reading_only_its_data(tmp_path: Path) -> None:
    """Finding 13.5: cost grows with the data (1 MiB here), not the virtual size (1 TiB)."""
    path = sparse_file(
        tmp_path / "big.raw",
        TiB,
        [(0, os.urandom(MiB // 2)), (TiB - MiB // 2, os.urandom(MiB // 2))],
    )
    got, read = digest.file_digest(path)
    assert read <= 2 * MiB  # blocks touching data only, never the terabyte of holes
    assert len(got) == 64
