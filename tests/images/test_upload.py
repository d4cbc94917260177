from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from diskvault.images import upload
from diskvault.images.errors import InvalidUpload, UploadStalled, UploadTooLarge
from diskvault.images.files import allocated_bytes

BOUNDARY = "test-boundary-1234"
CTYPE = f"multipart/form-data; boundary={BOUNDARY}"
MiB = 1024 * 1024


def body(fields: dict[str, str], file: bytes | None, filename: str = "disk.img") -> bytes:
    out = b""
    for name, value in fields.items():
        out += (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        ).encode()
    if file is not None:
        out += (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        out += file + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def receive(
    data: bytes, dest: Path, *, chunk: int = 65536, limit: int = 1 << 40
) -> upload.Received:
    return asyncio.run(upload.receive(_chunks(data, chunk), CTYPE, dest, limit=limit))


@pytest.mark.parametrize("chunk", [1, 7, 65536, 3 * MiB])
def test_fields_file_and_hash_survive_any_chunking(tmp_path: Path, chunk: int) -> None:
    payload = os.urandom(50_000) if chunk < 100 else os.urandom(upload.BATCH + 12345)
    dest = tmp_path / "x.partial"
    got = receive(body({"name": "Win 11", "image_type": "game"}, payload), dest, chunk=chunk)
    assert got.fields == {"name": "Win 11", "image_type": "game"}
    assert got.filename == "disk.img"
    assert got.size == len(payload)
    assert got.sha256 == hashlib.sha256(payload).hexdigest()
    assert dest.read_bytes() == payload


def test_zero_blocks_become_holes(tmp_path: Path) -> None:
    payload = bytes(4 * MiB) + os.urandom(MiB) + bytes(4 * MiB) + b"end"
    dest = tmp_path / "x.partial"
    got = receive(body({}, payload), dest)
    assert dest.read_bytes() == payload
    assert got.sha256 == hashlib.sha256(payload).hexdigest()
    assert allocated_bytes(dest) < 2 * MiB


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (body({"name": "x"}, None), "no 'file' part"),
        (body({}, b"a")[: -len(BOUNDARY) - 6] + body({}, b"b"), "exactly one"),
        (b"--other\r\ngarbage", "malformed"),
        (body({"name": "x" * (upload.MAX_FIELDS_BYTES + 1)}, b"a"), "fields exceed"),
    ],
    ids=["no-file", "two-files", "malformed", "huge-field"],
)
def test_bad_forms_are_refused_and_leave_nothing(tmp_path: Path, data: bytes, message: str) -> None:
    dest = tmp_path / "x.partial"
    with pytest.raises(InvalidUpload) as info:
        receive(data, dest)
    assert message in info.value.message
    assert not dest.exists()


def test_over_the_limit_is_refused(tmp_path: Path) -> None:
    dest = tmp_path / "x.partial"
    with pytest.raises(UploadTooLarge):
        receive(body({}, os.urandom(upload.BATCH * 2)), dest, limit=upload.BATCH)
    assert not dest.exists()


def test_not_multipart_is_refused() -> None:
    with pytest.raises(InvalidUpload):
        upload.boundary_of("application/json")


def test_a_body_without_its_closing_boundary_is_refused(tmp_path: Path) -> None:
    """Issue 14.1: a multipart body cut short is not a complete upload."""
    whole = body({"name": "x"}, os.urandom(3 * MiB))
    for cut in (len(whole) - len(BOUNDARY) - 6, len(whole) - 3 * MiB // 2):
        dest = tmp_path / f"cut-{cut}.partial"
        with pytest.raises(InvalidUpload) as info:
            receive(whole[:cut], dest)
        assert "before its closing boundary" in info.value.message
        assert not dest.exists()


def test_a_file_part_shorter_than_its_content_length_is_refused(tmp_path: Path) -> None:
    payload = os.urandom(1000)
    data = body({}, payload).replace(
        b"Content-Type: application/octet-stream", b"Content-Length: 2000"
    )
    dest = tmp_path / "x.partial"
    with pytest.raises(InvalidUpload) as info:
        receive(data, dest)
    assert "declares Content-Length 2000 but 1000 bytes arrived" in info.value.message
    assert not dest.exists()
    exact = body({}, payload).replace(
        b"Content-Type: application/octet-stream", b"Content-Length: 1000"
    )
    assert receive(exact, tmp_path / "ok.partial").size == 1000


def test_a_utf8_filename_is_kept(tmp_path: Path) -> None:
    got = receive(body({}, b"abc", filename="Образ диска ü.img"), tmp_path / "x.partial")
    assert got.filename == "Образ диска ü.img"


def test_a_stalled_body_times_out_and_leaves_nothing(tmp_path: Path) -> None:
    """Finding 13.7: a client that stops sending is dropped after the idle timeout."""

    async def stalls() -> AsyncIterator[bytes]:
        yield body({}, b"x" * 100)[:150]
        await asyncio.Event().wait()  # never sends again
        yield b""

    dest = tmp_path / "x.partial"
    with pytest.raises(UploadStalled) as info:
        asyncio.run(upload.receive(upload.idle_limited(stalls(), 0.2), CTYPE, dest, limit=1 << 30))
    assert info.value.status == 408 and "DISKVAULT_UPLOAD_IDLE_TIMEOUT_S" in info.value.message
    assert not dest.exists()


def test_a_slow_upload_holds_one_small_buffer(tmp_path: Path) -> None:
    """Finding 13.7: buffers are made as needed, so a trickling upload holds one or two MiB."""
    fd = os.open(tmp_path / "y", os.O_CREAT | os.O_WRONLY)
    slow = upload._Sink(fd, 1 << 30, plain=True)

    async def trickle() -> None:
        for _ in range(3000):  # 3 MB in 1000-byte pieces, each written before the next
            await slow.feed(memoryview(b"z" * 1000))
            await slow.settle()  # a slow client: the disk keeps up between its pieces

    try:
        asyncio.run(trickle())
    finally:
        os.close(fd)
        slow.close()
    assert slow.buffers <= 2 and 4 * MiB >= upload.BATCH * upload.BUFFERS
