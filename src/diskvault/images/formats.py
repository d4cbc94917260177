"""Header parsers for each disk image format, used by :mod:`diskvault.images.inspect`.

Parsers read only through :class:`Reader`, which bounds every read by size and
by a total budget, so a hostile header cannot make us read or allocate much.
Every integer taken from a header is range-checked before it is used as an
offset or a length. A parser raises :class:`UnsafeImage` for any feature that
would make qemu open another file (backing files, external data files, VMDK
extents) or that we do not understand.
"""

from __future__ import annotations

import re
import struct
import uuid

from diskvault.images.errors import Reason, UnsafeImage
from diskvault.images.reader import Detection, KiB, MiB, Reader, bad

# --- qcow2 -------------------------------------------------------------------

QCOW2_MAGIC = b"QFI\xfb"
QCOW2_MAX_L1_BYTES = 32 * 1024 * 1024
QCOW2_INCOMPAT_CORRUPT = 1 << 1
QCOW2_INCOMPAT_DATA_FILE = 1 << 2
# dirty, corrupt, external data file, compression type, extended L2
QCOW2_INCOMPAT_KNOWN = 0b11111
QCOW2_EXT_DATA_FILE = 0x44415441
QCOW2_EXT_CRYPTO = 0x0537BE77
QCOW2_MAX_EXTENSIONS = 256


def _name_at(r: Reader, offset: int, length: int) -> str:
    if 0 < length <= 1023 and offset + length <= r.size:
        return r.at(offset, length).decode("utf-8", "replace")
    return f"<{length} bytes at offset {offset}>"


def parse_qcow2(r: Reader) -> Detection:
    version, backing_off, backing_len, cluster_bits, size, crypt = struct.unpack(
        ">IQIIQI", r.at(4, 32)
    )
    l1_size, l1_off, rc_off, _rc_clusters, nb_snapshots = struct.unpack(">IQQII", r.at(36, 28))
    if version not in (2, 3):
        raise bad(f"qcow2 version {version} is not 2 or 3")
    if not 9 <= cluster_bits <= 21:
        raise bad(f"qcow2 cluster_bits {cluster_bits} is outside 9..21")
    cluster = 1 << cluster_bits
    if backing_off or backing_len:
        name = _name_at(r, backing_off, backing_len)
        raise UnsafeImage(Reason.BACKING_FILE, f"the qcow2 image names a backing file {name!r}")
    if crypt:
        raise UnsafeImage(Reason.ENCRYPTED, "the qcow2 image is encrypted")
    if l1_size and (l1_off % cluster or l1_off + 8 * l1_size > r.size):
        raise bad("the qcow2 L1 table is unaligned or reaches past the end of the file")
    # QEMU's own limits on open: at most 32 MiB of L1 table, and enough to map the disk.
    if l1_size > QCOW2_MAX_L1_BYTES // 8:
        raise bad(f"the qcow2 L1 table of {l1_size} entries is over QEMU's 32 MiB limit")
    needed = -(-size // (cluster * (cluster // 8)))
    if l1_size < needed <= QCOW2_MAX_L1_BYTES // 8:  # more than that is over the size limit
        raise bad(f"the qcow2 L1 table of {l1_size} entries cannot map {size} bytes")
    if not rc_off or rc_off % cluster or rc_off >= r.size:
        raise bad("the qcow2 refcount table offset is unaligned or past the end of the file")
    ext_start = 72
    if version == 3:
        incompat, _compat, _autoclear, refcount_order, header_len = struct.unpack(
            ">QQQII", r.at(72, 32)
        )
        if not 104 <= header_len <= cluster:
            raise bad(f"qcow2 header length {header_len} is outside 104..{cluster}")
        if refcount_order > 6:
            raise bad(f"qcow2 refcount_order {refcount_order} is over 6")
        if incompat & QCOW2_INCOMPAT_CORRUPT:
            raise UnsafeImage(Reason.CORRUPT, "the qcow2 image is marked corrupt")
        if incompat & QCOW2_INCOMPAT_DATA_FILE:
            raise UnsafeImage(Reason.DATA_FILE, "the qcow2 image keeps its data in another file")
        if unknown := incompat & ~QCOW2_INCOMPAT_KNOWN:
            raise UnsafeImage(
                Reason.UNKNOWN_FEATURE,
                f"the qcow2 image sets unknown incompatible bits {unknown:#x}",
            )
        ext_start = header_len
    _check_qcow2_extensions(r, ext_start, min(cluster, r.size))
    return Detection(
        "qcow2",
        size,
        {"version": version, "cluster_size": cluster, "snapshots": nb_snapshots},
    )


def _check_qcow2_extensions(r: Reader, offset: int, end: int) -> None:
    """Walk the header extensions, which must end within the first cluster."""
    for _ in range(QCOW2_MAX_EXTENSIONS):
        if offset + 8 > end:
            return
        ext_type, ext_len = struct.unpack(">II", r.at(offset, 8))
        if ext_type == 0:
            return
        if ext_type == QCOW2_EXT_DATA_FILE:
            name = _name_at(r, offset + 8, ext_len)
            raise UnsafeImage(Reason.DATA_FILE, f"the qcow2 image names a data file {name!r}")
        if ext_type == QCOW2_EXT_CRYPTO:
            raise UnsafeImage(Reason.ENCRYPTED, "the qcow2 image has an encryption header")
        offset += 8 + ((ext_len + 7) & ~7)
        if offset > end:
            raise bad("a qcow2 header extension runs past the first cluster")
    raise bad(f"the qcow2 image has over {QCOW2_MAX_EXTENSIONS} header extensions")


# --- VHDX --------------------------------------------------------------------

VHDX_REGION_TABLE = 192 * KiB
VHDX_MAX_ENTRIES = 2047
VHDX_REGION_BAT = uuid.UUID("2DC27766-F623-4200-9D64-115E9BFD4A08").bytes_le
VHDX_REGION_METADATA = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E").bytes_le
VHDX_FILE_PARAMETERS = uuid.UUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B").bytes_le
VHDX_VIRTUAL_DISK_SIZE = uuid.UUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8").bytes_le
VHDX_PARENT_LOCATOR = uuid.UUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C").bytes_le
# Known metadata items and the least length each needs.
VHDX_KNOWN_METADATA = {
    VHDX_FILE_PARAMETERS: 8,
    VHDX_VIRTUAL_DISK_SIZE: 8,
    VHDX_PARENT_LOCATOR: 0,
    uuid.UUID("BECA12AB-B2E6-4523-93EF-C309E000C746").bytes_le: 16,  # page 83 data
    uuid.UUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F").bytes_le: 4,  # logical sector size
    uuid.UUID("CDA348C7-445D-4471-9CC9-E9885251C556").bytes_le: 4,  # physical sector size
}
VHDX_METADATA_REQUIRED = 1 << 2
VHDX_HAS_PARENT = 1 << 1


def parse_vhdx(r: Reader) -> Detection:
    signature, _crc, count, _ = struct.unpack("<4sIII", r.at(VHDX_REGION_TABLE, 16))
    if signature != b"regi":
        raise bad("the VHDX region table signature is missing")
    if count > VHDX_MAX_ENTRIES:
        raise bad(f"the VHDX region table has {count} entries (limit {VHDX_MAX_ENTRIES})")
    table = r.at(VHDX_REGION_TABLE + 16, 32 * count)
    metadata: tuple[int, int] | None = None
    for i in range(count):
        guid, offset, length, required = struct.unpack_from("<16sQII", table, 32 * i)
        if offset % MiB or length % MiB or offset < MiB or offset + length > r.size:
            raise bad(f"VHDX region {i} ({offset}+{length}) is unaligned or outside the file")
        if guid == VHDX_REGION_METADATA:
            metadata = (offset, length)
        elif guid != VHDX_REGION_BAT and required & 1:
            raise UnsafeImage(
                Reason.UNKNOWN_FEATURE, "the VHDX image has an unknown required region"
            )
    if metadata is None:
        raise bad("the VHDX image has no metadata region")
    items = vhdx_metadata_items(r, *metadata)
    if VHDX_PARENT_LOCATOR in items:
        raise UnsafeImage(Reason.BACKING_FILE, "the VHDX image is a differencing disk")
    if VHDX_VIRTUAL_DISK_SIZE not in items or VHDX_FILE_PARAMETERS not in items:
        raise bad("the VHDX metadata lacks the virtual disk size or file parameters")
    (size,) = struct.unpack("<Q", r.at(items[VHDX_VIRTUAL_DISK_SIZE], 8))
    block_size, flags = struct.unpack("<II", r.at(items[VHDX_FILE_PARAMETERS], 8))
    if flags & VHDX_HAS_PARENT:
        raise UnsafeImage(Reason.BACKING_FILE, "the VHDX image is a differencing disk")
    return Detection("vhdx", size, {"block_size": block_size})


def vhdx_metadata_items(r: Reader, region: int, region_len: int) -> dict[bytes, int]:
    """Map of metadata item id to the item's absolute file offset."""
    signature, _, count = struct.unpack("<8sHH", r.at(region, 12))
    if signature != b"metadata":
        raise bad("the VHDX metadata table signature is missing")
    if count > VHDX_MAX_ENTRIES:
        raise bad(f"the VHDX metadata table has {count} entries (limit {VHDX_MAX_ENTRIES})")
    table = r.at(region + 32, 32 * count)
    items: dict[bytes, int] = {}
    for i in range(count):
        item, offset, length, flags = struct.unpack_from("<16sIII", table, 32 * i)
        if length and (offset < 64 * KiB or length > MiB or offset + length > region_len):
            raise bad(f"VHDX metadata item {i} ({offset}+{length}) is outside its region")
        if item in VHDX_KNOWN_METADATA:
            if length < VHDX_KNOWN_METADATA[item]:
                raise bad(f"VHDX metadata item {i} is too short")
            items[item] = region + offset
        elif flags & VHDX_METADATA_REQUIRED:
            raise UnsafeImage(
                Reason.UNKNOWN_FEATURE, "the VHDX image has unknown required metadata"
            )
    return items


# --- VMDK --------------------------------------------------------------------

VMDK_MAGIC = b"KDMV"
VMDK_MAX_DESCRIPTOR = MiB
VMDK_ALLOWED_TYPES = ("monolithicSparse", "streamOptimized")
_VMDK_KEY = re.compile(r'^([A-Za-z0-9_.]+)\s*=\s*"?([^"]*)"?\s*$')
_VMDK_EXTENT = re.compile(r'^(RW|RDONLY|NOACCESS)\s+\d+\s+(\S+)(?:\s+"([^"]*)")?')
_VMDK_TEXT = re.compile(rb"^\s*(# Disk DescriptorFile|createType\s*=)", re.M)


def is_vmdk_text(r: Reader) -> bool:
    # A descriptor file is plain text; a binary disk that merely contains the
    # words (like a sparse VMDK's embedded descriptor) is not one.
    start = r.head[:4096]
    return r.size <= VMDK_MAX_DESCRIPTOR and b"\0" not in start and bool(_VMDK_TEXT.search(start))


def parse_vmdk_sparse(r: Reader) -> Detection:
    version, _flags, capacity, _grain, desc_off, desc_size = struct.unpack("<IIQQQQ", r.at(4, 40))
    if version not in (1, 2, 3):
        raise bad(f"VMDK version {version} is not 1..3")
    # qemu opens a zero-capacity sparse file's embedded descriptor as a
    # descriptor file, following its extents: the classic VMDK file-read attack.
    if capacity == 0:
        raise bad("the VMDK sparse header has zero capacity")
    if not desc_off or not 0 < desc_size <= VMDK_MAX_DESCRIPTOR // 512:
        raise bad(f"the VMDK embedded descriptor size {desc_size} sectors is out of range")
    create_type = _check_vmdk_descriptor(r.at(desc_off * 512, desc_size * 512), embedded=True)
    return Detection("vmdk", capacity * 512, {"create_type": create_type})


def parse_vmdk_text(r: Reader) -> Detection:
    # A descriptor file keeps its data in extent files, so it is never accepted.
    _check_vmdk_descriptor(r.head, embedded=False)
    raise bad("the VMDK descriptor file names no extents")


def _check_vmdk_descriptor(raw: bytes, *, embedded: bool) -> str:
    """Reject anything that makes qemu open another file; return the create type."""
    text = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
    create_type = ""
    extents: list[tuple[str, str | None]] = []
    for line in (ln.strip() for ln in text.splitlines()):
        if not line or line.startswith("#"):
            continue
        if line.startswith(("RW", "RDONLY", "NOACCESS")):
            match = _VMDK_EXTENT.match(line)
            if match is None:
                raise UnsafeImage(Reason.VMDK_EXTENT, f"unparsable VMDK extent line {line[:80]!r}")
            extents.append((match[2], match[3]))
        elif (match := _VMDK_KEY.match(line)) is not None:
            if match[1] == "createType":
                create_type = match[2]
            elif match[1] == "parentFileNameHint":
                raise UnsafeImage(Reason.BACKING_FILE, f"the VMDK names a parent {match[2]!r}")
    if not embedded and extents:
        raise UnsafeImage(
            Reason.VMDK_EXTENT, f"the VMDK descriptor names extent file {extents[0][1]!r}"
        )
    if embedded:
        names = [name for _, name in extents]
        only_self = len(extents) == 1 and extents[0][0] == "SPARSE"
        if not only_self or any(n is None or "/" in n or "\\" in n for n in names):
            raise UnsafeImage(Reason.VMDK_EXTENT, f"the VMDK descriptor names extents {names!r}")
    if create_type not in VMDK_ALLOWED_TYPES:
        raise UnsafeImage(
            Reason.VMDK_CREATE_TYPE,
            f"VMDK create type {create_type!r} is not one of {', '.join(VMDK_ALLOWED_TYPES)}",
        )
    return create_type


# --- VDI ---------------------------------------------------------------------

VDI_SIGNATURE = 0xBEDA107F
VDI_TYPES = {1: "dynamic", 2: "fixed"}
VDI_TYPE_DIFF = 4


def parse_vdi(r: Reader) -> Detection:
    h = r.at(0, 0x190)
    version, _hsize, image_type = struct.unpack_from("<III", h, 0x44)
    offset_bmap, offset_data = struct.unpack_from("<II", h, 0x154)
    (sector_size,) = struct.unpack_from("<I", h, 0x168)
    size, block_size, _extra, blocks, allocated = struct.unpack_from("<QIIII", h, 0x170)
    if version >> 16 != 1:
        raise bad(f"VDI version {version:#x} is not 1.x")
    if image_type == VDI_TYPE_DIFF:
        raise UnsafeImage(Reason.BACKING_FILE, "the VDI image is a differencing image")
    if image_type not in VDI_TYPES:
        raise UnsafeImage(Reason.UNSUPPORTED_FORMAT, f"VDI image type {image_type} is unsupported")
    if sector_size != 512 or block_size != MiB:
        raise bad(f"VDI sector size {sector_size} or block size {block_size} is unsupported")
    if offset_bmap % 512 or offset_data % 512 or max(offset_bmap, offset_data) > r.size:
        raise bad("VDI block map or data offset is unaligned or past the end of the file")
    if size > blocks * block_size:
        raise bad(f"VDI disk size {size} exceeds its {blocks} blocks")
    # qemu-img check does not notice blocks past the end: a file cut short is caught here.
    if offset_data + allocated * block_size > r.size:
        raise UnsafeImage(Reason.CORRUPT, f"the VDI file ends before its {allocated} data blocks")
    return Detection("vdi", size, {"subformat": VDI_TYPES[image_type]})


# --- VPC (VHD) ---------------------------------------------------------------

VPC_COOKIE = b"conectix"
VPC_TYPES = {2: "fixed", 3: "dynamic"}
VPC_TYPE_DIFF = 4
VPC_MAX_GEOMETRY = 65535 * 16 * 255
# Creator apps whose images qemu sizes by CHS geometry rather than current_size.
VPC_CHS_CREATORS = (b"vpc ", b"qemu")


def parse_vpc(r: Reader) -> Detection:
    at_start = r.head[:8] == VPC_COOKIE
    footer = r.head[:512] if at_start else r.tail
    data_off, _ts, creator = struct.unpack_from(">QI4s", footer, 16)
    current, cyls, heads, secs, disk_type = struct.unpack_from(">QHBBI", footer, 48)
    if disk_type == VPC_TYPE_DIFF:
        raise UnsafeImage(Reason.BACKING_FILE, "the VHD image is a differencing disk")
    if disk_type not in VPC_TYPES or (disk_type == 3) != at_start:
        raise bad(f"VHD disk type {disk_type} does not match where its footer is")
    if disk_type == 3:
        if data_off % 512:
            raise bad("the VHD dynamic header offset is unaligned")
        dyn = r.at(data_off, 40)
        table_off, _ver, entries, block_size = struct.unpack_from(">QIII", dyn, 16)
        if dyn[:8] != b"cxsparse":
            raise bad("the VHD dynamic header is missing")
        if block_size < 512 or block_size & (block_size - 1) or table_off + 4 * entries > r.size:
            raise bad("the VHD block size or allocation table is out of range")
    chs = cyls * heads * secs
    if creator in VPC_CHS_CREATORS and chs != VPC_MAX_GEOMETRY:
        size = chs * 512
    else:
        size = current - current % 512
    creator_name = creator.decode("latin-1").strip()
    return Detection("vpc", size, {"subformat": VPC_TYPES[disk_type], "creator": creator_name})


# --- ISO 9660 ----------------------------------------------------------------

ISO_DESCRIPTOR = 0x8000


def parse_iso(r: Reader) -> Detection:
    label = r.head[ISO_DESCRIPTOR + 40 : ISO_DESCRIPTOR + 72].decode("ascii", "replace").strip()
    return Detection("iso", r.size, {"volume_id": label})
