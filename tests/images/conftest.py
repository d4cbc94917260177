"""Sample images of every supported format, built once per session by qemu-img and qemu-io."""

from __future__ import annotations

import shutil
import struct
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from diskvault.tools import qemu_img
from support import qemu_io
from support.tmpfs import mounted_tmpfs

MiB = 1024 * 1024
SIZE = 16 * MiB
# 64 KiB chunks at increasing, grain-aligned offsets: streamOptimized VMDK
# accepts only such writes.
PATTERNS = [(0, 0xAA), (1 * MiB, 0xBB), (8 * MiB, 0xCC), (15 * MiB, 0xDD)]
CHUNK = 64 * 1024
ISO_BLOCKS = 512


@dataclass(frozen=True)
class Sample:
    path: Path
    format: str  # what inspect_file must report
    virtual_size: int
    details: dict[str, object]
    patterned: bool  # holds PATTERNS, so converts to the expected raw


def write_patterns(path: Path, fmt: str) -> None:
    for offset, byte in PATTERNS:
        qemu_io.write_pattern(path, fmt, offset, CHUNK, byte)


def patch(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(data)


def mbr_entry(path: Path, part_type: int, start: int, sectors: int) -> None:
    entry = struct.pack("<B3sB3sII", 0x80, b"\0\0\0", part_type, b"\0\0\0", start, sectors)
    patch(path, 446, entry)
    patch(path, 510, b"\x55\xaa")


def make_iso(path: Path, *, hybrid: bool = False) -> None:
    """A minimal ISO 9660 image: a primary volume descriptor and a terminator."""
    pvd = bytearray(2048)
    pvd[0:7] = b"\x01CD001\x01"
    pvd[40:72] = b"DISKVAULT_TEST".ljust(32)
    struct.pack_into("<I", pvd, 80, ISO_BLOCKS)
    struct.pack_into(">I", pvd, 84, ISO_BLOCKS)
    struct.pack_into("<H", pvd, 128, 2048)
    struct.pack_into(">H", pvd, 130, 2048)
    with open(path, "wb") as fh:
        fh.truncate(ISO_BLOCKS * 2048)
        fh.seek(16 * 2048)
        fh.write(pvd)
        fh.write(b"\xffCD001\x01".ljust(2048, b"\0"))
    if hybrid:
        mbr_entry(path, 0x17, 0, ISO_BLOCKS * 4)


@pytest.fixture(scope="session")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Sample]:
    d = tmp_path_factory.mktemp("samples")
    out: dict[str, Sample] = {}
    disks = {
        "raw": ("raw", {}, SIZE, {}),
        "qcow2": ("qcow2", {}, SIZE, {}),
        "vhdx": ("vhdx", {}, SIZE, {}),
        "vdi": ("vdi", {}, SIZE, {}),
        # qemu sizes its own VHDs by CHS geometry, which rounds 16 MiB up.
        "vpc": ("vpc", {}, 16781312, {"subformat": "dynamic"}),
        "vpc-fixed": ("vpc", {"subformat": "fixed"}, 16781312, {"subformat": "fixed"}),
        "vmdk": ("vmdk", {}, SIZE, {"create_type": "monolithicSparse"}),
        "vmdk-stream": (
            "vmdk",
            {"subformat": "streamOptimized"},
            SIZE,
            {"create_type": "streamOptimized"},
        ),
    }
    for name, (fmt, options, vsize, details) in disks.items():
        path = d / f"{name}.{fmt}"
        qemu_img.create(path, fmt, SIZE, options=options)
        write_patterns(path, fmt)
        out[name] = Sample(path, fmt, vsize, details, patterned=True)

    mbr = d / "mbr.raw"
    qemu_img.create(mbr, "raw", SIZE)
    mbr_entry(mbr, 0x83, 2048, SIZE // 512 - 2048)
    out["mbr"] = Sample(mbr, "raw", SIZE, {"partition_table": "mbr"}, patterned=False)

    gpt = d / "gpt.raw"
    qemu_img.create(gpt, "raw", SIZE)
    subprocess.run(["sgdisk", "-n", "1:2048:0", "-t", "1:8300", str(gpt)], check=True, timeout=30)
    out["gpt"] = Sample(gpt, "raw", SIZE, {"partition_table": "gpt"}, patterned=False)

    iso = d / "plain.iso"
    make_iso(iso)
    out["iso"] = Sample(iso, "iso", ISO_BLOCKS * 2048, {"volume_id": "DISKVAULT_TEST"}, False)
    hybrid = d / "hybrid.iso"
    make_iso(hybrid, hybrid=True)
    out["iso-hybrid"] = Sample(hybrid, "iso", ISO_BLOCKS * 2048, {"partition_table": "mbr"}, False)
    return out


@pytest.fixture(scope="session")
def kit() -> SimpleNamespace:
    """Constants and helpers for the tests (conftest is not importable under every import mode)."""
    return SimpleNamespace(
        SIZE=SIZE,
        PATTERNS=PATTERNS,
        CHUNK=CHUNK,
        patch=patch,
        mbr_entry=mbr_entry,
        make_iso=make_iso,
    )


@pytest.fixture
def copy_of(samples: dict[str, Sample], tmp_path: Path) -> Callable[[str], Path]:
    """A private copy of a sample, for tests that corrupt it."""

    def make(name: str) -> Path:
        src = samples[name].path
        dst = tmp_path / src.name
        shutil.copyfile(src, dst)
        return dst

    return make


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[str]:
    """A moto S3 server on loopback for image-store tests, with dummy credentials."""
    from moto.server import ThreadedMotoServer

    env = pytest.MonkeyPatch()
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    }.items():
        env.setenv(name, value)
    env.delenv("AWS_PROFILE", raising=False)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        env.undo()


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs: a full disk on demand."""
    with mounted_tmpfs(tmp_path / "small", "4m") as mnt:
        yield mnt
