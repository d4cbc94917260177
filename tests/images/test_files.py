from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from diskvault.images import files
from diskvault.images.digest import ExtentHasher
from diskvault.images.errors import InsufficientSpace
from diskvault.images.files import (
    allocated_bytes,
    convert_file,
    copy_sparse,
    sha256_file,
    space_needed,
)
from diskvault.tools import qemu_img
from diskvault.tools.process import Cancelled
from support import qemu_io
from support.images_util import MiB, expected_raw, patterned, reference_digest

TiB = 1024 * 1024 * MiB


def _sparse_file(path: Path) -> Path:
    with open(path, "wb") as fh:
        fh.truncate(10 * MiB + 123)
        fh.seek(3 * MiB)
        fh.write(os.urandom(MiB + 7))
        fh.seek(9 * MiB)
        fh.write(b"tail data")
    return path


def test_sha256_skips_holes_but_hashes_them_as_zeros(tmp_path: Path) -> None:
    path = _sparse_file(tmp_path / "sparse.bin")
    seen: list[int] = []
    assert sha256_file(path, progress=seen.append) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert seen == sorted(seen) and seen[-1] == path.stat().st_size


def test_sha256_of_a_file_that_is_only_a_hole(tmp_path: Path) -> None:
    path = tmp_path / "hole.bin"
    with open(path, "wb") as fh:
        fh.truncate(3 * MiB + 1)
    assert sha256_file(path) == hashlib.sha256(bytes(3 * MiB + 1)).hexdigest()


def test_sha256_of_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.bin"
    path.touch()
    assert sha256_file(path) == hashlib.sha256(b"").hexdigest()


def test_sha256_can_be_cancelled(tmp_path: Path) -> None:
    with pytest.raises(Cancelled):
        sha256_file(_sparse_file(tmp_path / "x.bin"), should_cancel=lambda: True)


def test_copy_sparse_keeps_content_and_holes(tmp_path: Path) -> None:
    src = _sparse_file(tmp_path / "src.bin")
    dst = tmp_path / "dst.bin"
    copy_sparse(src, dst)
    assert dst.read_bytes() == src.read_bytes()
    assert allocated_bytes(dst) < 3 * MiB
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize("target", ["raw", "qcow2", "vmdk", "vhdx"])
def test_convert_is_sparse_exact_and_leaves_no_partial(tmp_path: Path, target: str) -> None:
    src = patterned(tmp_path / "src.qcow2", "qcow2")
    out = tmp_path / f"out.{target}"
    percents: list[float] = []
    convert_file(src, "qcow2", out, target, progress=percents.append)
    assert qemu_img.compare(out, expected_raw(tmp_path / "expected.raw"), target, "raw")
    assert percents and percents[-1] == 100.0
    assert not list(tmp_path.glob("*.partial"))
    if target == "raw":
        assert allocated_bytes(out) < 2 * MiB < out.stat().st_size


@pytest.mark.parametrize("segment", [3 * MiB, 64 * MiB], ids=["6-segments", "1-segment"])
def test_raw_convert_hashes_segments_while_converting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, segment: int
) -> None:
    monkeypatch.setattr(files, "SEGMENT", segment)
    src = patterned(tmp_path / "src.qcow2", "qcow2")
    out = tmp_path / "out.raw"
    hashed: list[int] = []
    percents: list[float] = []
    digest = convert_file(
        src,
        "qcow2",
        out,
        "raw",
        progress=percents.append,
        digest=True,
        digest_progress=hashed.append,
    )
    assert qemu_img.compare(out, expected_raw(tmp_path / "expected.raw"), "raw", "raw")
    assert digest == reference_digest(out.read_bytes())
    assert allocated_bytes(out) < 2 * MiB < out.stat().st_size  # still sparse
    assert hashed == sorted(hashed) and hashed[-1] == out.stat().st_size
    assert percents == sorted(percents) and percents[-1] == 100.0
    assert not list(tmp_path.glob("*.partial"))


def test_convert_flushes_unless_told_not_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flushed: list[Path] = []
    monkeypatch.setattr(files, "fsync_path", flushed.append)
    src = patterned(tmp_path / "src.qcow2", "qcow2")
    convert_file(src, "qcow2", tmp_path / "a.raw", "raw")
    assert flushed == [tmp_path / "a.raw.partial"]
    convert_file(src, "qcow2", tmp_path / "b.raw", "raw", sync=False)
    assert flushed == [tmp_path / "a.raw.partial"]
    assert (tmp_path / "b.raw").read_bytes() == (tmp_path / "a.raw").read_bytes()


def test_convert_to_other_formats_hashes_while_flushing(tmp_path: Path) -> None:
    src = patterned(tmp_path / "src.qcow2", "qcow2")
    out = tmp_path / "out.qcow2"
    digest = convert_file(src, "qcow2", out, "qcow2", digest=True)
    assert digest == reference_digest(out.read_bytes())
    assert convert_file(src, "qcow2", tmp_path / "again.raw", "raw") is None


@pytest.mark.parametrize("target", ["raw", "qcow2"])
def test_a_cancelled_hash_leaves_no_partial(tmp_path: Path, target: str) -> None:
    src = patterned(tmp_path / "src.qcow2", "qcow2")
    out = tmp_path / f"c.{target}"
    with pytest.raises(Cancelled):
        convert_file(src, "qcow2", out, target, digest=True, should_cancel=_after(3))
    assert not list(tmp_path.glob("c.*"))


def _after(calls: int) -> Callable[[], bool]:
    """A should_cancel that says yes from its ``calls``-th call on."""
    count = iter(range(calls, -(10**9), -1))
    return lambda: next(count) <= 1


def test_convert_failure_and_cancel_leave_nothing(tmp_path: Path) -> None:
    src = tmp_path / "src.qcow2"
    qemu_img.create(src, "qcow2", 16 * MiB)
    qemu_io.write_pattern(src, "qcow2", 0, 8 * MiB, 0x33)  # 8 s at the 1 MiB/s rate limit
    out = tmp_path / "out.raw"
    with pytest.raises(Cancelled):
        convert_file(src, "qcow2", out, "raw", rate_limit=MiB, should_cancel=lambda: True)
    with pytest.raises(qemu_img.QemuImgError):
        convert_file(src, "qcow2", out, "raw", options={"no_such_option": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.qcow2"]


def test_space_needed_counts_data_not_virtual_size(tmp_path: Path) -> None:
    src = tmp_path / "big.qcow2"
    qemu_img.create(src, "qcow2", 1024 * MiB)
    qemu_io.write_pattern(src, "qcow2", 0, 2 * MiB, 0x11)
    assert 2 * MiB <= space_needed(src, "qcow2", "raw", binary="qemu-img") < 3 * MiB
    assert 2 * MiB <= space_needed(src, "qcow2", "qcow2", binary="qemu-img") < 4 * MiB
    assert space_needed(src, "qcow2", "vhdx", binary="qemu-img") > 2 * MiB


def test_convert_fails_early_when_the_output_cannot_fit(tmp_path: Path, small_fs: Path) -> None:
    src = tmp_path / "src.qcow2"
    qemu_img.create(src, "qcow2", 64 * MiB)
    qemu_io.write_pattern(src, "qcow2", 0, 6 * MiB, 0x22)
    with pytest.raises(InsufficientSpace) as info:
        convert_file(src, "qcow2", small_fs / "out.raw", "raw")
    assert info.value.status == 507
    assert "needs" in info.value.message and "free" in info.value.message
    assert list(small_fs.iterdir()) == []


def test_a_tebibyte_disk_converts_and_hashes_by_its_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 13.5: 1 TiB virtual, 128 KiB of data: only the data is converted and read."""
    hashers: list[ExtentHasher] = []

    class Recording(ExtentHasher):
        def __init__(self) -> None:
            super().__init__()
            hashers.append(self)

    monkeypatch.setattr(files, "ExtentHasher", Recording)
    src = tmp_path / "big.qcow2"
    qemu_img.create(src, "qcow2", TiB)
    qemu_io.write_pattern(src, "qcow2", 0, 65536, 0xAA)
    qemu_io.write_pattern(src, "qcow2", TiB - 65536, 65536, 0xBB)
    out = tmp_path / "big.raw"
    digest = convert_file(src, "qcow2", out, "raw", digest=True)
    assert out.stat().st_size == TiB and allocated_bytes(out) < MiB
    assert hashers[0].fed <= 2 * 65536  # the two data blocks, never the holes
    fd = os.open(out, os.O_RDONLY)
    try:
        head, tail = os.pread(fd, 65536, 0), os.pread(fd, 65536, TiB - 65536)
    finally:
        os.close(fd)
    assert head == b"\xaa" * 65536 and tail == b"\xbb" * 65536
    h = hashlib.sha256(struct.pack(">QQ", 0, 65536) + head)
    h.update(struct.pack(">QQ", TiB - 65536, 65536) + tail + struct.pack(">Q", TiB))
    assert digest == h.hexdigest()


def test_a_sparse_vhdx_converts_only_its_present_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """qemu maps all of a VHDX as data; its block table says which 64 MiB segments to convert."""
    monkeypatch.setattr(files, "SEGMENT", 64 * MiB)
    src = tmp_path / "big.vhdx"
    size = 4160 * MiB
    qemu_img.create(src, "vhdx", size, options={"block_size": MiB})
    # 1 MiB blocks: a sector-bitmap entry follows every 4096 block entries (4 GiB)
    for offset, byte in ((0, 0x11), (4095 * MiB + 512, 0x22), (4150 * MiB, 0x33)):
        qemu_io.write_pattern(src, "vhdx", offset, MiB, byte)
    segments = files.data_segments(src, "vhdx", size, binary="qemu-img")
    assert segments == [0, 4032 * MiB, 4096 * MiB]
    out = tmp_path / "out.raw"
    convert_file(src, "vhdx", out, "raw", digest=True)
    assert qemu_img.compare(src, out, "vhdx", "raw")
