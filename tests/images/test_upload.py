from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from diskvault.images import upload
from diskvault.images.errors import InvalidUpload, UploadTooLarge
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
