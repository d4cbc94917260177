"""The on-disk repository: layout, JSON sidecars, immutability flags, rescan.

Layout: ``{repo}/{source}/disk-{n}/full-YYYYmmddTHHMMSS.qcow2`` and
``incr-YYYYmmddTHHMMSS.qcow2``, each with a ``.json`` sidecar (parent, bitmap,
checksums, sizes, change id). Backing files are named relative to the image, so
a repository can be moved, copied or attached to a fresh diskvault, and any
QEMU tool can open a restore point without diskvault.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from diskvault import fsutil
from diskvault.tools.process import ToolError, run

SIDECAR_FORMAT = "diskvault-backup/1"
STAMP = "%Y%m%dT%H%M%S"
PARTIAL = ".partial"
NAME_RE = re.compile(r"^(full|incr)-(\d{8}T\d{6})\.qcow2$")
CHATTR_TIMEOUT = 30.0


class ChattrError(ToolError):
    tool_name = "chattr"


def disk_dir(root: Path, source: str, disk: int) -> Path:
    return root / source / f"disk-{disk}"


def new_point_name(directory: Path, kind: str, at: datetime) -> str:
    """``full-<stamp>.qcow2``; a stamp already used in the directory moves on a second."""
    prefix = "full" if kind == "full" else "incr"
    used = {m[2] for p in _names(directory) if (m := NAME_RE.match(p))}
    stamp_at = at.astimezone(UTC).replace(microsecond=0)
    while stamp_at.strftime(STAMP) in used:
        stamp_at = stamp_at.fromtimestamp(stamp_at.timestamp() + 1, UTC)
    return f"{prefix}-{stamp_at.strftime(STAMP)}.qcow2"


def _names(directory: Path) -> list[str]:
    try:
        return [n.removesuffix(PARTIAL) for n in os.listdir(directory)]
    except FileNotFoundError:
        return []


def sidecar_path(image: Path) -> Path:
    return image.with_suffix(".json")


def hashmap_path(image: Path) -> Path:
    return image.with_suffix(".hashmap")


def screenshot_path(image: Path) -> Path:
    """The screen of the point's last boot verification, beside its sidecar."""
    return image.with_name(image.name + ".boot.png")


def partial(path: Path) -> Path:
    return path.with_name(path.name + PARTIAL)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    fsutil.write_atomic(path, json.dumps(data, indent=1, sort_keys=True).encode())


def fsync_dir(directory: Path) -> None:
    """Repositories may sit on mounts that cannot sync a directory; the files are synced."""
    with contextlib.suppress(OSError):
        fsutil.fsync_dir(directory)


def read_sidecar(path: Path) -> dict[str, Any]:
    with open(path) as fh:
        data: dict[str, Any] = json.load(fh)
    if data.get("format") != SIDECAR_FORMAT:
        raise ValueError(f"{path}: not a diskvault sidecar (format {data.get('format')!r})")
    return data


def remove_partials(directory: Path) -> list[Path]:
    """Delete leftovers of interrupted runs (the caller holds the disk lock)."""
    removed = []
    for name in os.listdir(directory) if directory.is_dir() else []:
        if name.endswith(PARTIAL):
            path = directory / name
            set_immutable([path], on=False)
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def point_files(image: Path) -> list[Path]:
    """The image and the files stored beside it (sidecar, hash map) that exist."""
    return [p for p in (image, sidecar_path(image), hashmap_path(image)) if p.exists()]


def delete_point_files(image: Path) -> None:
    files = point_files(image)
    set_immutable(files, on=False)
    for path in (*files, screenshot_path(image)):
        path.unlink(missing_ok=True)
    fsync_dir(image.parent)


# -- immutability -------------------------------------------------------------


def set_immutable(paths: Iterable[Path], *, on: bool, chattr: str = "chattr") -> bool:
    """``chattr +i``/``-i``; False when the filesystem does not support the flag."""
    targets = [str(p) for p in paths if p.exists()]
    if not targets:
        return True
    try:
        run([chattr, "+i" if on else "-i", *targets], timeout=CHATTR_TIMEOUT, error=ChattrError)
    except ChattrError as exc:
        if on:
            return False
        if "Operation not supported" in exc.stderr or "Inappropriate ioctl" in exc.stderr:
            return False
        raise
    return True


def probe_immutable(root: Path) -> bool:
    """Whether this filesystem keeps ``chattr +i`` (ext4, xfs, btrfs do; NFS and CIFS do not)."""
    probe = root / ".diskvault-immutable-probe"
    probe.write_bytes(b"")
    try:
        if not set_immutable([probe], on=True):
            return False
        try:
            with open(probe, "ab"):
                return False  # the flag did not stick
        except PermissionError:
            return True
    finally:
        set_immutable([probe], on=False)
        probe.unlink(missing_ok=True)


def usage(root: Path) -> tuple[int, int]:
    total, _, free = shutil.disk_usage(root)
    return total, free


# -- rescan -------------------------------------------------------------------


@dataclass(frozen=True)
class Found:
    """A sidecar found on disk, with the image file it describes."""

    sidecar: dict[str, Any]
    image: Path
    relative: str


def scan(root: Path) -> Iterator[Found]:
    """Every restore point whose image and sidecar are both present."""
    for sidecar in sorted(root.glob("*/disk-*/*.json")):
        if sidecar.name.endswith(PARTIAL):
            continue
        try:
            data = read_sidecar(sidecar)
        except (OSError, ValueError):
            continue
        image = sidecar.with_name(str(data.get("file", "")))
        if NAME_RE.match(image.name) and image.is_file():
            yield Found(data, image, image.relative_to(root).as_posix())


def utc(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None
