"""Which header parser applies to a file: the probe registry, formats diskvault refuses
outright, truncated headers, and the partition tables and boot signatures that make a
container file a polyglot. The parsers themselves are :mod:`.formats`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import NamedTuple

from diskvault.images.errors import Reason, UnsafeImage
from diskvault.images.formats import (
    ISO_DESCRIPTOR,
    QCOW2_MAGIC,
    VDI_SIGNATURE,
    VHDX_REGION_TABLE,
    VMDK_MAGIC,
    VPC_COOKIE,
    is_vmdk_text,
    parse_iso,
    parse_qcow2,
    parse_vdi,
    parse_vhdx,
    parse_vmdk_sparse,
    parse_vmdk_text,
    parse_vpc,
)
from diskvault.images.reader import Detection, KiB, Reader


class Probe(NamedTuple):
    matches: Callable[[Reader], bool]
    parse: Callable[[Reader], Detection]


def _unsupported(name: str) -> Callable[[Reader], Detection]:
    def parse(r: Reader) -> Detection:
        raise UnsafeImage(Reason.UNSUPPORTED_FORMAT, f"{name} images are not supported")

    return parse


def _magic(magic: bytes) -> Callable[[Reader], bool]:
    return lambda r: r.head.startswith(magic)


PROBES: dict[str, Probe] = {
    "qcow2": Probe(lambda r: r.head[:4] == QCOW2_MAGIC and r.size >= 104, parse_qcow2),
    "vhdx": Probe(
        lambda r: r.head[:8] == b"vhdxfile" and r.size >= VHDX_REGION_TABLE + 64 * KiB, parse_vhdx
    ),
    "vmdk": Probe(lambda r: r.head[:4] == VMDK_MAGIC and r.size >= 512, parse_vmdk_sparse),
    "vmdk-descriptor": Probe(is_vmdk_text, parse_vmdk_text),
    "vdi": Probe(
        lambda r: r.size >= 512 and struct.unpack_from("<I", r.head, 0x40)[0] == VDI_SIGNATURE,
        parse_vdi,
    ),
    "vpc": Probe(lambda r: r.size >= 512 and VPC_COOKIE in (r.head[:8], r.tail[:8]), parse_vpc),
    "iso": Probe(lambda r: r.head[ISO_DESCRIPTOR + 1 : ISO_DESCRIPTOR + 6] == b"CD001", parse_iso),
    "qed": Probe(_magic(b"QED\0"), _unsupported("QED")),
    "luks": Probe(_magic(b"LUKS\xba\xbe"), _unsupported("LUKS")),
    "parallels": Probe(
        lambda r: r.head[:16] in (b"WithoutFreeSpace", b"WithouFreSpacExt"),
        _unsupported("Parallels"),
    ),
    "bochs": Probe(_magic(b"Bochs Virtual HD Image"), _unsupported("Bochs")),
    "cloop": Probe(_magic(b"#!/bin/sh\n#V2.0 Format"), _unsupported("cloop")),
    "vmdk3": Probe(_magic(b"COWD"), _unsupported("VMDK3 (COWD)")),
    "dmg": Probe(lambda r: r.tail[:4] == b"koly", _unsupported("DMG")),
}


# The leading magic of each format with a header at offset 0: a file that starts with
# one but is too short for the probe above is a truncated image, not raw data.
LEADING_MAGIC = {
    "qcow2": QCOW2_MAGIC,
    "vhdx": b"vhdxfile",
    "vmdk": VMDK_MAGIC,
    "vpc": VPC_COOKIE,
}


def truncated_format(r: Reader) -> str | None:
    for name, magic in LEADING_MAGIC.items():
        if r.head.startswith(magic):
            return name
    if len(r.head) >= 0x44 and struct.unpack_from("<I", r.head, 0x40)[0] == VDI_SIGNATURE:
        return "vdi"
    return None


def boot_signature(r: Reader) -> bool:
    """The first sector ends in 0x55AA, as an MBR (or a FAT boot sector) does."""
    return len(r.head) >= 512 and r.head[510:512] == b"\x55\xaa"


def partition_table(r: Reader) -> str | None:
    """``"gpt"``, ``"mbr"`` or None from the first sectors of a raw disk."""
    h = r.head
    if len(h) < 512 or h[510:512] != b"\x55\xaa":
        return None
    entries = [h[446 + 16 * i : 462 + 16 * i] for i in range(4)]
    if any(e[0] not in (0, 0x80) for e in entries) or all(e[4] == 0 for e in entries):
        return None
    protective = any(e[4] == 0xEE for e in entries)
    if protective and b"EFI PART" in (h[512:520], h[4096:4104]):
        return "gpt"
    return "mbr"
