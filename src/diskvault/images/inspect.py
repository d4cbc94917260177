"""Safe image inspection: read only an image's own headers before qemu touches it.

qemu follows references inside an image (qcow2 backing and data files, VMDK
extents) and probes formats by content, so running ``qemu-img`` on an untrusted
file can read any file on the host. :func:`inspect_file` therefore parses the
headers itself, in the spirit of OpenStack Glance's format inspector: it opens
only the given path, reads a bounded number of bytes, and rejects references to
other files, unknown features, polyglots and lies about the format. Only then
may :func:`verify_with_qemu_img` run ``qemu-img info -f <detected>`` under
resource limits, as a second opinion.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diskvault.images.errors import Reason, UnsafeImage
from diskvault.images.probes import (
    PROBES,
    VPC_COOKIE,
    boot_signature,
    partition_table,
    truncated_format,
)
from diskvault.images.reader import Detection, Reader
from diskvault.tools import qemu_img

FORMATS = ("qcow2", "vhdx", "vmdk", "vdi", "vpc", "raw", "iso")
ALIASES = {"vhd": "vpc", "img": "raw"}


@dataclass(frozen=True)
class Inspection:
    path: str
    format: str  # one of FORMATS
    virtual_size: int
    file_size: int
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def qemu_format(self) -> str:
        """The ``-f`` value for qemu tools: an ISO is read as raw."""
        return "raw" if self.format == "iso" else self.format


def inspect_file(
    path: str | os.PathLike[str],
    *,
    claimed_format: str | None = None,
    max_virtual_size: int,
) -> Inspection:
    """Detect the format and virtual size of ``path``; raise :class:`UnsafeImage` if unsafe.

    ``claimed_format`` (what the uploader said) must agree with what is found;
    ``"raw"`` also accepts an ISO.
    """
    claimed = _normalize(claimed_format) if claimed_format else None
    fd, size = _open(path)
    try:
        reader = Reader(fd, size)
        detection = _detect(reader, claimed)
    finally:
        os.close(fd)
    if detection.virtual_size <= 0:
        raise UnsafeImage(Reason.EMPTY, "the image has no data")
    if detection.virtual_size > max_virtual_size:
        raise UnsafeImage(
            Reason.TOO_LARGE,
            f"virtual size {detection.virtual_size} bytes is over the limit of "
            f"{max_virtual_size} bytes",
        )
    return Inspection(
        path=os.fspath(path),
        format=detection.format,
        virtual_size=detection.virtual_size,
        file_size=size,
        details=detection.details,
    )


def _normalize(claimed: str) -> str:
    name = ALIASES.get(claimed.lower(), claimed.lower())
    if name not in FORMATS:
        raise UnsafeImage(Reason.UNSUPPORTED_FORMAT, f"format {claimed!r} is not supported")
    return name


def _open(path: str | os.PathLike[str]) -> tuple[int, int]:
    # O_NONBLOCK so that a FIFO planted at the path cannot hang us.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        raise UnsafeImage(Reason.UNREADABLE, f"cannot open {path}: {exc.strerror}") from exc
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
            raise UnsafeImage(Reason.UNREADABLE, f"{path} is not a regular file or block device")
        return fd, os.lseek(fd, 0, os.SEEK_END)
    except BaseException:
        os.close(fd)
        raise


def _detect(reader: Reader, claimed: str | None) -> Detection:
    matched = [name for name, probe in PROBES.items() if probe.matches(reader)]
    table = partition_table(reader)
    # A hybrid ISO carries an MBR or GPT so it can boot from a USB stick, and a fixed VHD
    # is the guest's raw disk (its partition table included) followed by a footer. Any
    # other container format whose first sector also ends in the MBR boot signature is a
    # polyglot, whether or not its partition entries look valid (as OpenStack's
    # format_inspector judges it).
    if (matched and matched not in (["iso"], ["vpc"]) and (table or boot_signature(reader))) or (
        matched == ["vpc"] and reader.head[:8] == VPC_COOKIE and (table or boot_signature(reader))
    ):
        matched.append(table or "mbr")
    if len(matched) > 1:
        raise UnsafeImage(
            Reason.POLYGLOT, f"the file looks like several formats at once: {', '.join(matched)}"
        )
    if not matched and (truncated := truncated_format(reader)):
        raise UnsafeImage(
            Reason.INVALID_HEADER,
            f"the file starts like a {truncated} image but is too short to hold its headers "
            f"({reader.size} bytes): it was cut off; upload it again",
        )
    name = matched[0] if matched else "raw"
    shown = "vmdk" if name == "vmdk-descriptor" else name
    if claimed and claimed != shown and not (claimed == "raw" and shown == "iso"):
        raise UnsafeImage(
            Reason.FORMAT_MISMATCH, f"the image was declared {claimed} but is {shown}"
        )
    # qemu reads a raw file whose size is not a multiple of 512 as zero-padded to the next one.
    raw_size = -(-reader.size // 512) * 512
    detection = PROBES[name].parse(reader) if matched else Detection("raw", raw_size)
    if table:
        detection.details["partition_table"] = table
    return detection


def verify_with_qemu_img(
    path: str | os.PathLike[str],
    inspection: Inspection,
    *,
    binary: str = qemu_img.DEFAULT_BINARY,
) -> dict[str, Any]:
    """Run ``qemu-img info`` (limited) with the detected format; it must agree with us.

    Returns qemu-img's JSON. Only call this after :func:`inspect_file` accepted
    the file.
    """
    try:
        info = qemu_img.info(path, inspection.qemu_format, binary=binary)
    except qemu_img.QemuImgError as exc:
        raise UnsafeImage(
            Reason.QEMU_DISAGREES, f"qemu-img cannot read the image: {exc.stderr[-500:]}"
        ) from exc
    if info.get("format") != inspection.qemu_format:
        raise UnsafeImage(
            Reason.QEMU_DISAGREES,
            f"qemu-img reads it as {info.get('format')}, not {inspection.qemu_format}",
        )
    if "backing-filename" in info or "full-backing-filename" in info:
        raise UnsafeImage(
            Reason.BACKING_FILE, f"qemu-img reports backing file {info.get('backing-filename')!r}"
        )
    specific = info.get("format-specific", {}).get("data", {})
    if specific.get("data-file"):
        raise UnsafeImage(Reason.DATA_FILE, f"qemu-img reports data file {specific['data-file']!r}")
    own = Path(path).resolve()
    for extent in specific.get("extents", []):
        if Path(extent.get("filename", "")).resolve() != own:
            raise UnsafeImage(
                Reason.VMDK_EXTENT, f"qemu-img reports extent {extent.get('filename')!r}"
            )
    if info.get("virtual-size") != inspection.virtual_size:
        raise UnsafeImage(
            Reason.QEMU_DISAGREES,
            f"qemu-img reports virtual size {info.get('virtual-size')}, "
            f"the header says {inspection.virtual_size}",
        )
    return info


# Formats whose metadata ``qemu-img check`` can verify (raw, ISO and VHD have none it checks).
CHECKED_FORMATS = ("qcow2", "vhdx", "vmdk", "vdi")


def check_with_qemu_img(
    path: str | os.PathLike[str],
    inspection: Inspection,
    *,
    binary: str = qemu_img.DEFAULT_BINARY,
) -> dict[str, Any] | None:
    """``qemu-img check`` (never repairing) must find no corruption; leaked clusters are fine.

    A file cut short has tables pointing past its end, so it fails here rather than
    converting into a disk with zeros where its data was. Only call this after
    :func:`verify_with_qemu_img`.
    """
    if inspection.format not in CHECKED_FORMATS:
        return None
    try:
        report = qemu_img.check(
            path, inspection.format, binary=binary, prlimit=qemu_img.INFO_PRLIMIT
        )
    except qemu_img.QemuImgError as exc:
        raise UnsafeImage(
            Reason.CHECK_FAILED, f"qemu-img check could not read it: {exc.stderr[-300:].strip()}"
        ) from exc
    if report["result"] == "corrupt" or report.get("check-errors"):
        raise UnsafeImage(
            Reason.CHECK_FAILED,
            f"qemu-img check found {report.get('corruptions', 0)} corruptions and "
            f"{report.get('check-errors', 0)} check errors in the {inspection.format} image",
        )
    return report
