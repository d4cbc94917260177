"""The sparse upload stream: client encoding, server decoding, and what lands on disk."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from starlette.requests import ClientDisconnect

from diskvault.images import digest, sparse, upload
from diskvault.images.errors import InvalidUpload, UploadTooLarge
from diskvault.images.files import allocated_bytes
from diskvault.storage.errors import StorageFull
from support.images_util import reference_digest

MiB = 1024 * 1024


def sparse_file(path: Path) -> Path:
    """Data, a hole, a written run of zeros, data across a read boundary, a hole at the end."""
    with open(path, "wb") as fh:
        fh.write(os.urandom(MiB + 100))
        fh.seek(5 * MiB)
        fh.write(bytes(3 * MiB))  # allocated zeros: the client drops them
        fh.write(os.urandom(9 * MiB))
        fh.write(b"tail")
        fh.truncate(24 * MiB + 7)
    return path


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def receive(
    data: bytes, dest: Path, *, chunk: int = 65536, limit: int = 1 << 40
) -> upload.Received:
    return asyncio.run(upload.receive_sparse(_chunks(data, chunk), dest, limit=limit))


@pytest.mark.parametrize("chunk", [4093, 65536, 5 * MiB])
def test_round_trip_keeps_bytes_hash_and_holes(tmp_path: Path, chunk: int) -> None:
    src = sparse_file(tmp_path / "src.img")
    seen: list[int] = []
    stream = b"".join(sparse.encode(src, seen.append))
    original = src.read_bytes()
    assert len(stream) < 11 * MiB  # the 3 MiB of zeros and the holes did not travel
    assert seen[-1] == len(original) and seen == sorted(seen)
    dest = tmp_path / "dest.partial"
    got = receive(stream, dest, chunk=chunk)
    assert got.size == len(original)
    assert got.digest == reference_digest(original) and got.sha256 is None
    assert dest.read_bytes() == original
    assert allocated_bytes(dest) < 12 * MiB


def test_headers_split_byte_by_byte(tmp_path: Path) -> None:
    stream = record(3, b"abc") + record(100, b"z" * 50) + sparse.HEADER.pack(200, 0)
    dest = tmp_path / "x.partial"
    got = receive(stream, dest, chunk=1)
    expected = bytes(3) + b"abc" + bytes(94) + b"z" * 50 + bytes(50)
    assert dest.read_bytes() == expected
    assert got.digest == reference_digest(expected)


def test_empty_and_all_hole_files(tmp_path: Path) -> None:
    for size in (0, 3 * MiB + 1):
        src = tmp_path / f"src-{size}"
        with open(src, "wb") as fh:
            fh.truncate(size)
        stream = b"".join(sparse.encode(src))
        assert stream == sparse.HEADER.pack(size, 0)
        dest = tmp_path / f"dest-{size}"
        got = receive(stream, dest)
        assert got.size == size and dest.stat().st_size == size
        assert got.digest == reference_digest(bytes(size))


def record(offset: int, data: bytes) -> bytes:
    return sparse.HEADER.pack(offset, len(data)) + data


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        (record(10, b"abc") + record(11, b"x") + sparse.HEADER.pack(20, 0), "increasing order"),
        (record(0, b"abc") + sparse.HEADER.pack(3, 0) + b"more", "after its end record"),
        (record(0, b"abc") + record(5, b"de"), "ended before its end record"),
        (record(0, b"abc")[:-1], "ended before its end record"),
        (sparse.HEADER.pack(0, 100) + b"short", "ended before its end record"),
    ],
    ids=["overlap", "trailing-bytes", "no-end-record", "cut-in-data", "cut-short"],
)
def test_bad_streams_are_refused_and_leave_nothing(
    tmp_path: Path, stream: bytes, message: str
) -> None:
    dest = tmp_path / "x.partial"
    with pytest.raises(InvalidUpload) as info:
        receive(stream, dest)
    assert message in info.value.message
    assert not dest.exists()


def test_a_record_past_the_limit_is_refused_before_its_data(tmp_path: Path) -> None:
    dest = tmp_path / "x.partial"
    with pytest.raises(UploadTooLarge):
        receive(sparse.HEADER.pack(1 << 30, 16) + b"x" * 16, dest, limit=MiB)
    assert not dest.exists()


def test_a_full_disk_stops_the_upload_cleanly(tmp_path: Path, small_fs: Path) -> None:
    src = tmp_path / "big.img"
    src.write_bytes(os.urandom(12 * MiB))
    dest = small_fs / "x.partial"
    with pytest.raises(StorageFull):
        receive(b"".join(sparse.encode(src)), dest)
    assert list(small_fs.iterdir()) == []


def test_a_stream_gap_is_never_hashed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 13.5: a 16 GiB gap costs nothing; only the 4 data bytes are hashed."""
    updates: list[int] = []
    real_sha256 = hashlib.sha256

    class Counting:
        def __init__(self) -> None:
            self.inner = real_sha256()

        def update(self, data: bytes | memoryview) -> None:
            updates.append(len(data))
            self.inner.update(data)

        def hexdigest(self) -> str:
            return self.inner.hexdigest()

    monkeypatch.setattr(digest.hashlib, "sha256", Counting)
    gap = 16 << 30
    dest = tmp_path / "x.partial"
    stream = sparse.HEADER.pack(gap, 4) + b"data" + sparse.HEADER.pack(gap + 4, 0)
    got = receive(stream, dest, limit=2 * gap)
    assert got.size == gap + 4 and dest.stat().st_size == gap + 4
    assert sum(updates) < 1024  # the block holding the data, a header and the size
    assert allocated_bytes(dest) < MiB


def test_a_dropped_stream_leaves_nothing(tmp_path: Path) -> None:
    async def dropped() -> AsyncIterator[bytes]:
        yield sparse.HEADER.pack(1 << 30, 4) + b"data"
        raise ClientDisconnect()

    dest = tmp_path / "x.partial"
    with pytest.raises(ClientDisconnect):
        asyncio.run(upload.receive_sparse(dropped(), dest, limit=1 << 31))
    assert not dest.exists()
