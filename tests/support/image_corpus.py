"""A corpus of disk images for the inspector oracle: every supported format made by the
real qemu-img, and hostile variants (backing files, external data files, VMDK extents,
polyglots, truncated and oversized headers, partition tables, LUKS)."""

from __future__ import annotations

import os
import struct
import subprocess
from pathlib import Path

from diskvault.tools import qemu_img as tool

MiB = 1024 * 1024
SIZE = 4 * MiB
MBR_ENTRY = bytes([0x80, 0, 2, 0, 0x83, 0, 0, 0]) + struct.pack("<II", 2048, 2048)


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True, timeout=60)


def write_at(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(data)


def copy_of(src: Path, dst: Path, length: int | None = None, pad_to: int = 0) -> Path:
    data = src.read_bytes()[:length]
    dst.write_bytes(data + bytes(max(0, pad_to - len(data))))
    return dst


def iso(path: Path) -> Path:
    """A primary volume descriptor and its terminator at 32 KiB, as ISO 9660 has them."""
    path.write_bytes(bytes(MiB))
    pvd = bytearray(2048)
    pvd[0:7] = b"\x01CD001\x01"
    struct.pack_into("<I", pvd, 80, 512)
    struct.pack_into(">I", pvd, 84, 512)
    struct.pack_into("<H", pvd, 128, 2048)
    struct.pack_into(">H", pvd, 130, 2048)
    write_at(path, 0x8000, bytes(pvd))
    write_at(path, 0x8800, b"\xffCD001\x01")
    return path


def vmdk_descriptor(path: Path, extent: str) -> Path:
    path.write_text(
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        f'createType="monolithicFlat"\n\nRW 8192 FLAT "{extent}" 0\n\n'
        'ddb.virtualHWVersion = "4"\n'
    )
    return path


def build(d: Path) -> dict[str, Path]:
    """Name -> file; the names say what each one is."""
    raw = d / "plain.raw"
    raw.write_bytes(os.urandom(64 * 1024) + bytes(SIZE - 64 * 1024))
    out = {"plain.raw": raw}
    converted = {
        "plain.qcow2": ("qcow2", None),
        "plain.vhdx": ("vhdx", None),
        "plain.vdi": ("vdi", None),
        "plain.vpc": ("vpc", None),
        "plain.vmdk": ("vmdk", None),
        "fixed.vpc": ("vpc", "subformat=fixed"),
        "stream.vmdk": ("vmdk", "subformat=streamOptimized"),
    }
    for name, (fmt, opts) in converted.items():
        qemu_img(
            "convert",
            "-f",
            "raw",
            "-O",
            fmt,
            *(["-o", opts] if opts else []),
            str(raw),
            str(d / name),
        )
        out[name] = d / name
    qemu_img("create", "-f", "vmdk", "-o", "subformat=monolithicFlat", str(d / "flat.vmdk"), "4M")
    out["flat.vmdk"] = d / "flat.vmdk"

    gpt = out["gpt.raw"] = d / "gpt.raw"
    gpt.write_bytes(bytes(SIZE))
    subprocess.run(
        ["sgdisk", "-n", "1:2048:4095", str(gpt)], check=True, capture_output=True, timeout=30
    )
    mbr = out["mbr.raw"] = d / "mbr.raw"
    mbr.write_bytes(bytes(SIZE))
    write_at(mbr, 446, MBR_ENTRY)
    write_at(mbr, 510, b"\x55\xaa")
    qemu_img(
        "convert",
        "-f",
        "raw",
        "-O",
        "vpc",
        "-o",
        "subformat=fixed",
        str(mbr),
        str(d / "mbr-fixed.vpc"),
    )
    out["mbr-fixed.vpc"] = d / "mbr-fixed.vpc"
    out["plain.iso"] = iso(d / "plain.iso")
    key = d / "luks.key"
    key.write_text("secret")
    luks = out["plain.luks"] = d / "plain.luks"
    # qemu_img.create retries QEMU's flaky PBKDF2 benchmark (see tools/qemu_img.py).
    secret = f"secret,id=s,file={key}"
    tool.create(luks, "luks", SIZE, options={"key-secret": "s"}, objects=[secret])

    # Hostile: anything that makes qemu open another file.
    qemu_img("create", "-f", "qcow2", "-b", str(raw), "-F", "raw", str(d / "backing.qcow2"))
    out["backing.qcow2"] = d / "backing.qcow2"
    qemu_img(
        "create",
        "-f",
        "qcow2",
        "-b",
        "/etc/passwd",
        "-F",
        "raw",
        "-u",
        str(d / "backing-passwd.qcow2"),
        "4M",
    )
    out["backing-passwd.qcow2"] = d / "backing-passwd.qcow2"
    qemu_img(
        "create",
        "-f",
        "qcow2",
        "-o",
        f"data_file={d / 'data.bin'}",
        str(d / "datafile.qcow2"),
        "4M",
    )
    out["datafile.qcow2"] = d / "datafile.qcow2"
    out["extent-abs.vmdk"] = vmdk_descriptor(d / "extent-abs.vmdk", "/etc/passwd")
    out["extent-rel.vmdk"] = vmdk_descriptor(d / "extent-rel.vmdk", "../../etc/shadow")

    # Polyglots: one file, two readings.
    qcow2 = out["plain.qcow2"]
    poly = out["qcow2-iso.qcow2"] = copy_of(qcow2, d / "qcow2-iso.qcow2", pad_to=0x9000)
    write_at(poly, 0x8001, b"CD001")
    poly = out["qcow2-mbr.qcow2"] = copy_of(qcow2, d / "qcow2-mbr.qcow2")
    write_at(poly, 446, MBR_ENTRY)
    write_at(poly, 510, b"\x55\xaa")
    poly = out["qcow2-bootsig.qcow2"] = copy_of(qcow2, d / "qcow2-bootsig.qcow2")
    write_at(poly, 510, b"\x55\xaa")
    poly = out["vhdx-mbr.vhdx"] = copy_of(out["plain.vhdx"], d / "vhdx-mbr.vhdx")
    write_at(poly, 446, MBR_ENTRY)
    write_at(poly, 510, b"\x55\xaa")
    out["qcow2-after-sector.raw"] = d / "qcow2-after-sector.raw"
    out["qcow2-after-sector.raw"].write_bytes(bytes(512) + qcow2.read_bytes()[:512])

    # Truncated and oversized headers.
    out["truncated.qcow2"] = copy_of(qcow2, d / "truncated.qcow2", 100)
    out["truncated.vhdx"] = copy_of(out["plain.vhdx"], d / "truncated.vhdx", 64 * 1024)
    out["truncated.vmdk"] = copy_of(out["plain.vmdk"], d / "truncated.vmdk", 300)
    out["truncated.vdi"] = copy_of(out["plain.vdi"], d / "truncated.vdi", 100)
    big = out["huge-size.qcow2"] = copy_of(qcow2, d / "huge-size.qcow2")
    write_at(big, 24, struct.pack(">Q", 1 << 62))
    big = out["huge-l1.qcow2"] = copy_of(qcow2, d / "huge-l1.qcow2")
    write_at(big, 36, struct.pack(">I", 0x7FFFFFFF))
    return out
