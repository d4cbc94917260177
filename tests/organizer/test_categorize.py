from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from diskvault.organizer.categorize import categorize, categorize_path, sniff_archive
from diskvault.storage import LocalStorageProvider
from support.organizer_trees import build_messy_tree, iso_bytes, put, qemu_img

LIMIT = 1 << 40


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("messy")
    return root, build_messy_tree(root)


def test_every_category_comes_from_content(tree: tuple[Path, dict[str, str]]) -> None:
    root, expected = tree
    provider = LocalStorageProvider(root)
    got = {
        f.key: categorize(provider, f, max_virtual_size=LIMIT, temp_dir=root / "tmp").category
        for page in provider.scan("")
        for f in page
    }
    assert got == expected


def test_formats_and_virtual_sizes(tree: tuple[Path, dict[str, str]]) -> None:
    root, _ = tree
    qcow2 = categorize_path(str(root / "vms/web.qcow2"), 1, max_virtual_size=LIMIT)
    assert (qcow2.format, qcow2.virtual_size) == ("qcow2", 64 * 1024 * 1024)
    raw = categorize_path(str(root / "disk.img"), 1, max_virtual_size=LIMIT)
    assert (raw.format, raw.note) == ("raw", "mbr")
    assert categorize_path(str(root / "isos/install.iso"), 1, max_virtual_size=LIMIT).format == (
        "iso"
    )


def test_unsafe_image_is_still_a_disk_image_with_the_reason(tmp_path: Path) -> None:
    qemu_img("create", "-q", "-f", "qcow2", str(tmp_path / "base.qcow2"), "16M")
    overlay = tmp_path / "overlay.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", str(overlay))
    found = categorize_path(str(overlay), overlay.stat().st_size, max_virtual_size=LIMIT)
    assert found.category == "disk-image" and found.format is None
    assert found.note and "rejected (backing-file)" in found.note


def test_raw_filesystem_without_partition_table_is_a_disk_image(tmp_path: Path) -> None:
    fs = tmp_path / "fs.img"
    with open(fs, "wb") as fh:
        fh.truncate(16 * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(fs)], check=True, timeout=60)
    found = categorize_path(str(fs), fs.stat().st_size, max_virtual_size=LIMIT)
    assert (found.category, found.format, found.note) == ("disk-image", "raw", "ext")


def test_empty_and_plain_files_are_other(tmp_path: Path) -> None:
    empty = put(tmp_path / "empty", b"")
    assert categorize_path(str(empty), 0, max_virtual_size=LIMIT).note == "empty"
    zeros = put(tmp_path / "zeros", bytes(100_000))
    assert categorize_path(str(zeros), 100_000, max_virtual_size=LIMIT).category == "other"
    iso = put(tmp_path / "x.bin", iso_bytes())  # no .iso extension needed
    assert categorize_path(str(iso), len(iso_bytes()), max_virtual_size=LIMIT).category == "iso"


@pytest.mark.parametrize(
    ("head", "name"),
    [
        (b"\x1f\x8b\x08", "gzip"),
        (b"\xfd7zXZ\x00", "xz"),
        (b"\x28\xb5\x2f\xfd", "zstd"),
        (b"BZh9", "bzip2"),
        (b"PK\x03\x04", "zip"),
        (b"7z\xbc\xaf\x27\x1c", "7z"),
        (b"Rar!\x1a\x07\x00", "rar"),
        (b"BZhx", None),
        (b"hello", None),
    ],
)
def test_archive_magic(head: bytes, name: str | None) -> None:
    assert sniff_archive(head + bytes(600)) == name
