"""The contract every provider promises, run against local, memory and S3 (moto)."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from diskvault.storage import (
    DestinationExists,
    InvalidKey,
    ObjectNotFound,
    SizeMismatch,
    StorageProvider,
)
from diskvault.storage.base import (
    StreamReader,
    UploadSource,
    copy_stream,
    normalize_key,
    normalize_prefix,
    source_errors,
)

MiB = 1024 * 1024


class FailingStream(io.RawIOBase):
    """Gives ``good`` bytes, then fails the way a dropped client connection does."""

    def __init__(self, good: int) -> None:
        self.left = good

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        if self.left <= 0:
            raise ConnectionResetError("client went away")
        n = min(len(b), self.left, 64 * 1024)
        b[:n] = b"x" * n
        self.left -= n
        return n


def put(provider: StorageProvider, key: str, data: bytes) -> None:
    provider.write(key, io.BytesIO(data), size=len(data))


def read(provider: StorageProvider, key: str, start: int = 0, end: int | None = None) -> bytes:
    with provider.open_read(key, start, end) as stream:
        return stream.read()


def all_keys(provider: StorageProvider, prefix: str = "") -> list[str]:
    return [f.key for page in provider.scan(prefix) for f in page]


def test_protocol_is_satisfied(provider: StorageProvider) -> None:
    assert isinstance(provider, StorageProvider)


def test_write_stat_read_roundtrip(provider: StorageProvider) -> None:
    data = os.urandom(3 * MiB + 7)
    seen: list[int] = []
    written = provider.write(
        "images/disk.raw", io.BytesIO(data), size=len(data), progress=seen.append
    )
    assert sum(seen) == len(data)
    assert written.key == "images/disk.raw"
    assert written.size == len(data)
    assert not written.is_dir
    assert written.url.endswith("images/disk.raw")
    assert provider.stat("images/disk.raw").size == len(data)
    assert provider.exists("images/disk.raw")
    assert read(provider, "images/disk.raw") == data


def test_ranged_reads(provider: StorageProvider) -> None:
    data = bytes(range(256)) * 40
    put(provider, "r.bin", data)
    assert read(provider, "r.bin", 10, 20) == data[10:20]
    assert read(provider, "r.bin", 5000) == data[5000:]
    assert read(provider, "r.bin", 0, 1) == data[:1]
    assert read(provider, "r.bin", 100, 100) == b""
    assert read(provider, "r.bin", len(data) + 10) == b""
    assert read(provider, "r.bin", len(data) - 3, len(data) + 50) == data[-3:]
    with pytest.raises(ObjectNotFound):
        read(provider, "missing.bin", 0, 10)


@pytest.mark.parametrize("algo", ["sha256", "md5"])
def test_hash_matches_hashlib(provider: StorageProvider, algo: str) -> None:
    data = os.urandom(2 * MiB + 123)
    put(provider, "h/file", data)
    assert provider.hash("h/file", algo) == hashlib.new(algo, data).hexdigest()


def test_failed_write_publishes_nothing(provider: StorageProvider) -> None:
    with pytest.raises(ConnectionResetError):
        provider.write("a/broken.img", FailingStream(good=300 * 1024))
    assert not provider.exists("a/broken.img")
    assert all_keys(provider) == []


def test_failed_write_keeps_previous_version(provider: StorageProvider) -> None:
    put(provider, "keep.img", b"old")
    with pytest.raises(ConnectionResetError):
        provider.write("keep.img", FailingStream(good=1000))
    assert read(provider, "keep.img") == b"old"


@pytest.mark.parametrize("actual", [10, 30])
def test_size_mismatch_publishes_nothing(provider: StorageProvider, actual: int) -> None:
    with pytest.raises(SizeMismatch) as info:
        provider.write("short.img", io.BytesIO(b"z" * actual), size=20)
    assert info.value.status == 400
    assert not provider.exists("short.img")


def test_write_without_overwrite_refuses_existing(provider: StorageProvider) -> None:
    put(provider, "w", b"first")
    with pytest.raises(DestinationExists):
        provider.write("w", io.BytesIO(b"second"), overwrite=False)
    assert read(provider, "w") == b"first"
    provider.write("w", io.BytesIO(b"third"))
    assert read(provider, "w") == b"third"


def test_copy_never_overwrites(provider: StorageProvider) -> None:
    put(provider, "src", b"source")
    put(provider, "dst", b"precious")
    with pytest.raises(DestinationExists) as info:
        provider.copy("src", "dst")
    assert info.value.status == 409
    assert read(provider, "dst") == b"precious"
    copied = provider.copy("src", "sub/dir/copy")
    assert copied.key == "sub/dir/copy"
    assert read(provider, "sub/dir/copy") == b"source"
    assert read(provider, "src") == b"source"
    provider.copy("src", "dst", overwrite=True)
    assert read(provider, "dst") == b"source"


def test_move_never_overwrites(provider: StorageProvider) -> None:
    put(provider, "a", b"A")
    put(provider, "b", b"B")
    with pytest.raises(DestinationExists):
        provider.move("a", "b")
    assert read(provider, "a") == b"A"
    assert read(provider, "b") == b"B"
    moved = provider.move("a", "sorted/a")
    assert moved.key == "sorted/a"
    assert not provider.exists("a")
    assert read(provider, "sorted/a") == b"A"
    provider.move("sorted/a", "b", overwrite=True)
    assert read(provider, "b") == b"A"
    assert not provider.exists("sorted/a")
    assert provider.move("b", "b").key == "b"
    with pytest.raises(ObjectNotFound) as info:
        provider.move("nope", "x")
    assert info.value.status == 404


def test_delete(provider: StorageProvider) -> None:
    put(provider, "d/x", b"1")
    provider.delete("d/x")
    assert not provider.exists("d/x")
    with pytest.raises(ObjectNotFound):
        provider.delete("d/x")
    provider.delete("d/x", missing_ok=True)


@pytest.mark.parametrize("key", ["../x", "a/../../x", "/etc/passwd", "", "a/\x00"])
def test_invalid_keys_are_refused(provider: StorageProvider, key: str) -> None:
    with pytest.raises(InvalidKey) as info:
        provider.write(key, io.BytesIO(b"x"))
    assert info.value.status == 400
    with pytest.raises(InvalidKey):
        provider.stat(key)


def test_pagination_covers_every_key_once(provider: StorageProvider) -> None:
    keys = sorted(f"p/{i // 40}/f{i:03d}" for i in range(120))
    for key in keys:
        put(provider, key, b"")
    put(provider, "other", b"")
    pages = list(provider.scan("p/", page_size=50))
    assert [len(p) for p in pages] == [50, 50, 20]
    assert [f.key for p in pages for f in p] == keys

    listed: list[str] = []
    cursor: str | None = None
    while True:
        page, cursor = provider.list("p/", cursor, 50)
        listed += [f.key for f in page]
        if cursor is None:
            break
    assert listed == keys


def test_non_recursive_listing_shows_folders(provider: StorageProvider) -> None:
    for key in ["top.txt", "a/1", "a/2", "a/deep/3", "b/4", "c.txt"]:
        put(provider, key, b"data")
    entries = [f for page in provider.scan("", recursive=False, page_size=2) for f in page]
    assert sorted((f.key, f.is_dir) for f in entries) == [
        ("a", True),
        ("b", True),
        ("c.txt", False),
        ("top.txt", False),
    ]
    inside = [f.key for page in provider.scan("a/", recursive=False) for f in page]
    assert sorted(inside) == ["a/1", "a/2", "a/deep"]


def test_string_prefix_matches_like_s3(provider: StorageProvider) -> None:
    for key in ["img/a", "img2/b", "imgx", "other/img"]:
        put(provider, key, b"")
    assert sorted(all_keys(provider, "img")) == ["img/a", "img2/b", "imgx"]
    assert all_keys(provider, "img/") == ["img/a"]
    assert all_keys(provider, "nothing/") == []


def test_upload_and_download_file(provider: StorageProvider, tmp_path: Path) -> None:
    src = tmp_path / "in.bin"
    data = os.urandom(MiB + 1)
    src.write_bytes(data)
    seen: list[int] = []
    uploaded = provider.upload_file(src, "up/in.bin", progress=seen.append)
    assert uploaded.size == len(data)
    assert sum(seen) == len(data)
    out = tmp_path / "stage" / "out.bin"
    assert provider.download_file("up/in.bin", out) == out
    assert out.read_bytes() == data
    assert [p.name for p in out.parent.iterdir()] == ["out.bin"]


def test_failed_download_leaves_nothing(provider: StorageProvider, tmp_path: Path) -> None:
    out = tmp_path / "stage" / "missing.img"
    with pytest.raises(ObjectNotFound):
        provider.download_file("missing.img", out)
    assert not out.exists()
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_repr_names_the_storage(provider: StorageProvider) -> None:
    assert provider.url in repr(provider)


def test_normalize_key() -> None:
    assert normalize_key("a//b/./c") == "a/b/c"
    assert normalize_key("", allow_empty=True) == ""
    assert normalize_prefix("a/./b/") == "a/b/"
    assert normalize_prefix("a/b") == "a/b"
    with pytest.raises(InvalidKey):
        normalize_key("a/..")


def test_copy_stream_handles_short_writes() -> None:
    out = bytearray()

    def short_write(chunk: memoryview) -> int:
        n = min(len(chunk), 1000)  # a pipe or socket that takes only part of each write
        out.extend(chunk[:n])
        return n

    data = os.urandom(300_000)
    assert copy_stream(io.BytesIO(data), short_write, buffer_size=64 * 1024) == len(data)
    assert bytes(out) == data


def test_stream_reader_limit() -> None:
    assert StreamReader(io.BytesIO(b"0123456789"), limit=4).read() == b"0123"
    assert StreamReader(io.BytesIO(b"0123456789")).read() == b"0123456789"


def test_upload_source_checks_size_and_shields_source_errors() -> None:
    assert UploadSource(io.BytesIO(b"0123"), expect=4, key="k").read() == b"0123"
    with pytest.raises(SizeMismatch):
        UploadSource(io.BytesIO(b"0123"), expect=5, key="k").read()
    with pytest.raises(ConnectionResetError), source_errors():
        UploadSource(FailingStream(good=10), expect=None, key="k").read()
