from __future__ import annotations

import builtins
import os
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from diskvault.images.errors import Reason, UnsafeImage
from diskvault.images.inspect import Inspection, inspect_file, verify_with_qemu_img
from diskvault.tools import qemu_img

Samples = dict[str, Any]  # name -> conftest.Sample
CopyOf = Callable[[str], Path]
LIMIT = 1024**3
MiB = 1024 * 1024
SAMPLE_NAMES = [
    "raw",
    "qcow2",
    "vhdx",
    "vdi",
    "vpc",
    "vpc-fixed",
    "vmdk",
    "vmdk-stream",
    "mbr",
    "gpt",
    "iso",
    "iso-hybrid",
]
PATTERNED = [n for n in SAMPLE_NAMES if n not in ("mbr", "gpt", "iso", "iso-hybrid")]


def rejected(path: Path, claimed: str | None = None, limit: int = LIMIT) -> UnsafeImage:
    with pytest.raises(UnsafeImage) as info:
        inspect_file(path, claimed_format=claimed, max_virtual_size=limit)
    assert info.value.status == 422
    return info.value


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_detects_format_and_size(samples: Samples, name: str) -> None:
    sample = samples[name]
    found = inspect_file(sample.path, max_virtual_size=LIMIT)
    assert found.format == sample.format
    assert found.virtual_size == sample.virtual_size
    assert sample.details.items() <= found.details.items()
    info = verify_with_qemu_img(sample.path, found)
    assert info["virtual-size"] == sample.virtual_size


@pytest.mark.parametrize("name", PATTERNED)
def test_converts_to_expected_raw(
    samples: Samples, name: str, tmp_path: Path, kit: SimpleNamespace
) -> None:
    sample = samples[name]
    found = inspect_file(sample.path, claimed_format=sample.format, max_virtual_size=LIMIT)
    out = tmp_path / "out.raw"
    qemu_img.convert(sample.path, found.qemu_format, out, "raw")
    assert qemu_img.compare(out, samples["raw"].path, "raw", "raw")
    # and the content really is the patterns, not two equally empty disks
    blank = tmp_path / "blank.raw"
    qemu_img.create(blank, "raw", kit.SIZE)
    assert not qemu_img.compare(out, blank, "raw", "raw")
    with open(out, "rb") as fh:
        for offset, byte in kit.PATTERNS:
            fh.seek(offset)
            assert fh.read(kit.CHUNK) == bytes([byte]) * kit.CHUNK


def test_iso_reads_as_raw_for_qemu(samples: Samples, tmp_path: Path) -> None:
    found = inspect_file(samples["iso"].path, claimed_format="raw", max_virtual_size=LIMIT)
    assert (found.format, found.qemu_format) == ("iso", "raw")
    out = tmp_path / "iso.qcow2"
    qemu_img.convert(samples["iso"].path, found.qemu_format, out, "qcow2")
    assert qemu_img.compare(samples["iso"].path, out, "raw", "qcow2")


def test_claimed_alias_is_accepted(samples: Samples) -> None:
    found = inspect_file(samples["vpc"].path, claimed_format="VHD", max_virtual_size=LIMIT)
    assert found.format == "vpc"


# --- malicious images ---------------------------------------------------------


def test_qcow2_backing_file_rejected(tmp_path: Path) -> None:
    path = tmp_path / "evil.qcow2"
    qemu_img.create(path, "qcow2", None, backing="/etc/passwd", backing_fmt="raw")
    err = rejected(path, "qcow2")
    assert err.reason == Reason.BACKING_FILE
    assert "/etc/passwd" in err.message


@pytest.mark.parametrize("keep_bit", [True, False])
def test_qcow2_data_file_rejected(tmp_path: Path, keep_bit: bool, kit: SimpleNamespace) -> None:
    path = tmp_path / "evil.qcow2"
    qemu_img.create(path, "qcow2", kit.SIZE, options={"data_file": str(tmp_path / "data.raw")})
    if not keep_bit:
        # the name extension alone must be caught too
        kit.patch(path, 72, struct.pack(">Q", 0))
    err = rejected(path)
    assert err.reason == Reason.DATA_FILE
    assert ("another file" if keep_bit else "data.raw") in err.message


def test_qcow2_unknown_incompatible_bit_rejected(copy_of: CopyOf, kit: SimpleNamespace) -> None:
    path = copy_of("qcow2")
    kit.patch(path, 72, struct.pack(">Q", 1 << 40))
    err = rejected(path)
    assert err.reason == Reason.UNKNOWN_FEATURE
    assert "0x10000000000" in err.message


def test_qcow2_corrupt_bit_rejected(copy_of: CopyOf, kit: SimpleNamespace) -> None:
    path = copy_of("qcow2")
    kit.patch(path, 72, struct.pack(">Q", 1 << 1))
    assert rejected(path).reason == Reason.CORRUPT


def test_vmdk_descriptor_file_pointing_at_shadow_rejected(tmp_path: Path) -> None:
    path = tmp_path / "evil.vmdk"
    path.write_text(
        "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n"
        'createType="monolithicFlat"\nRW 2048 FLAT "/etc/shadow" 0\n'
    )
    err = rejected(path, "vmdk")
    assert err.reason == Reason.VMDK_EXTENT
    assert "/etc/shadow" in err.message


def _edit_embedded_descriptor(path: Path, old: str, new: str) -> None:
    with open(path, "r+b") as fh:
        fh.seek(512)
        area = fh.read(10 * 1024)
        text = area.split(b"\0", 1)[0]
        assert old.encode() in text
        fh.seek(512)
        fh.write(text.replace(old.encode(), new.encode()).ljust(len(area), b"\0"))


def test_vmdk_embedded_extra_extent_rejected(copy_of: CopyOf) -> None:
    path = copy_of("vmdk")
    _edit_embedded_descriptor(
        path, "# The Disk Data Base", 'RW 2048 FLAT "/etc/shadow" 0\n# The Disk Data Base'
    )
    err = rejected(path)
    assert err.reason == Reason.VMDK_EXTENT
    assert "/etc/shadow" in err.message


def test_vmdk_create_type_rejected(copy_of: CopyOf) -> None:
    path = copy_of("vmdk")
    _edit_embedded_descriptor(path, 'createType="monolithicSparse"', 'createType="vmfs"')
    assert rejected(path).reason == Reason.VMDK_CREATE_TYPE


def test_vmdk_parent_hint_rejected(copy_of: CopyOf) -> None:
    path = copy_of("vmdk-stream")
    _edit_embedded_descriptor(
        path, "# Extent description", 'parentFileNameHint="/etc/passwd"\n# Extent description'
    )
    assert rejected(path).reason == Reason.BACKING_FILE


def test_vmdk_zero_capacity_rejected(copy_of: CopyOf, kit: SimpleNamespace) -> None:
    # zero capacity makes qemu follow the embedded descriptor's extents
    path = copy_of("vmdk")
    kit.patch(path, 12, struct.pack("<Q", 0))
    assert rejected(path).reason == Reason.INVALID_HEADER


def test_vmdk_huge_descriptor_size_rejected(copy_of: CopyOf, kit: SimpleNamespace) -> None:
    path = copy_of("vmdk")
    kit.patch(path, 36, struct.pack("<Q", 2**40))
    err = rejected(path)
    assert err.reason == Reason.INVALID_HEADER
    assert "descriptor" in err.message


@pytest.mark.parametrize("claimed,name", [("raw", "qcow2"), ("qcow2", "raw"), ("vdi", "vhdx")])
def test_claimed_format_mismatch_rejected(samples: Samples, claimed: str, name: str) -> None:
    err = rejected(samples[name].path, claimed)
    assert err.reason == Reason.FORMAT_MISMATCH
    assert f"declared {claimed}" in err.message


def test_polyglot_qcow2_and_iso_rejected(copy_of: CopyOf, kit: SimpleNamespace) -> None:
    path = copy_of("qcow2")
    kit.patch(path, 0x8000, b"\x01CD001\x01")
    err = rejected(path)
    assert err.reason == Reason.POLYGLOT
    assert "qcow2, iso" in err.message


def test_polyglot_qcow2_with_vhd_footer_rejected(samples: Samples, copy_of: CopyOf) -> None:
    path = copy_of("qcow2")
    footer = samples["vpc-fixed"].path.read_bytes()[-512:]
    with open(path, "ab") as fh:
        fh.write(footer)
    err = rejected(path, "qcow2")
    assert err.reason == Reason.POLYGLOT
    assert "vpc" in err.message


def test_polyglot_vdi_with_mbr_rejected(copy_of: CopyOf, kit: SimpleNamespace) -> None:
    path = copy_of("vdi")
    kit.mbr_entry(path, 0x83, 2048, 4096)
    assert rejected(path).reason == Reason.POLYGLOT


def test_huge_virtual_size_in_header_rejected(copy_of: CopyOf, kit: SimpleNamespace) -> None:
    path = copy_of("qcow2")
    kit.patch(path, 24, struct.pack(">Q", 1 << 60))
    err = rejected(path)
    assert err.reason == Reason.TOO_LARGE
    assert str(1 << 60) in err.message


def test_virtual_size_over_limit_rejected(tmp_path: Path) -> None:
    path = tmp_path / "big.qcow2"
    qemu_img.create(path, "qcow2", 2 * 1024**4)
    assert rejected(path, limit=1024**4).reason == Reason.TOO_LARGE
    assert inspect_file(path, max_virtual_size=2 * 1024**4).virtual_size == 2 * 1024**4


def test_vhdx_region_entry_count_rejected(copy_of: CopyOf, kit: SimpleNamespace) -> None:
    path = copy_of("vhdx")
    kit.patch(path, 192 * 1024 + 8, struct.pack("<I", 50000))
    err = rejected(path)
    assert err.reason == Reason.INVALID_HEADER
    assert "50000 entries" in err.message


def test_vhdx_metadata_offset_outside_region_rejected(
    copy_of: CopyOf, kit: SimpleNamespace
) -> None:
    path = copy_of("vhdx")
    with open(path, "rb") as fh:
        fh.seek(192 * 1024 + 16)
        regions = fh.read(64)
    # find the metadata region, then push its first item far away
    meta = next(
        struct.unpack_from("<Q", regions, 32 * i + 16)[0]
        for i in range(2)
        if regions[32 * i : 32 * i + 4] == bytes.fromhex("06a27c8b")
    )
    kit.patch(path, meta + 32 + 16, struct.pack("<I", 0xFFFF0000))
    err = rejected(path)
    assert err.reason == Reason.INVALID_HEADER
    assert "outside its region" in err.message


def test_unsupported_format_rejected(tmp_path: Path) -> None:
    path = tmp_path / "disk.qed"
    qemu_img.create(path, "qed", 16 * MiB)
    err = rejected(path)
    assert err.reason == Reason.UNSUPPORTED_FORMAT
    assert "QED" in err.message


def test_empty_and_special_files_rejected(tmp_path: Path) -> None:
    empty = tmp_path / "empty.raw"
    empty.touch()
    assert rejected(empty).reason == Reason.EMPTY
    assert rejected(tmp_path).reason == Reason.UNREADABLE
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert rejected(fifo).reason == Reason.UNREADABLE  # and did not hang
    assert rejected(tmp_path / "missing").reason == Reason.UNREADABLE


def test_unknown_claimed_format_rejected(samples: Samples) -> None:
    assert rejected(samples["raw"].path, "cloop").reason == Reason.UNSUPPORTED_FORMAT


def test_rejection_opens_only_the_given_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "evil.vmdk"
    path.write_text('createType="monolithicFlat"\nRW 2048 FLAT "/etc/shadow" 0\n')
    opened: list[str] = []
    real_os_open, real_open = os.open, builtins.open

    def os_open(file, *args, **kwargs):  # type: ignore[no-untyped-def]
        opened.append(os.fspath(file))
        return real_os_open(file, *args, **kwargs)

    def open_(file, *args, **kwargs):  # type: ignore[no-untyped-def]
        opened.append(os.fspath(file))
        return real_open(file, *args, **kwargs)

    def no_subprocess(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("inspect_file must not run anything")

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(subprocess, "Popen", no_subprocess)
    with pytest.raises(UnsafeImage) as info:
        inspect_file(path, max_virtual_size=LIMIT)
    monkeypatch.undo()
    assert info.value.reason == Reason.VMDK_EXTENT
    assert opened == [str(path)]


def test_verify_rejects_disagreement(samples: Samples) -> None:
    real = inspect_file(samples["qcow2"].path, max_virtual_size=LIMIT)
    lying = Inspection(real.path, real.format, real.virtual_size + 512, real.file_size)
    with pytest.raises(UnsafeImage) as info:
        verify_with_qemu_img(real.path, lying)
    assert info.value.reason == Reason.QEMU_DISAGREES
    wrong = Inspection(real.path, "vdi", real.virtual_size, real.file_size)
    with pytest.raises(UnsafeImage) as info:
        verify_with_qemu_img(real.path, wrong)
    assert info.value.reason == Reason.QEMU_DISAGREES
    assert "qemu-img cannot read" in info.value.message


def test_problem_body_names_reason(tmp_path: Path, kit: SimpleNamespace) -> None:
    path = tmp_path / "x.iso"
    kit.make_iso(path)
    err = rejected(path, "qcow2")
    body = err.problem()
    assert body["status"] == 422
    assert body["reason"] == "format-mismatch"
