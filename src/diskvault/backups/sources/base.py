"""What every source kind provides: its disks, and per disk a session that plans
a run (full or incremental, and why), copies the data into a target qcow2, and
then advances (commit) or leaves (close without commit) its change tracking."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

from diskvault.backups import keys
from diskvault.backups.keys import Key
from diskvault.config import Settings
from diskvault.tools import qemu_img

Progress = Callable[[int, int], None]  # bytes done, bytes total
Kind = Literal["full", "incremental"]


@dataclass(frozen=True)
class Previous:
    """The chain head a new incremental would sit on."""

    backup_id: str
    image: Path
    tracking: dict[str, Any]
    virtual_size: int
    chain: tuple[Path, ...] = ()  # every file of the head's chain, full first


@dataclass(frozen=True)
class Plan:
    backup_type: Kind
    virtual_size: int
    reason: str | None = None  # why this is a full when an incremental was possible or asked


@dataclass
class Copied:
    tracking: dict[str, Any]
    bytes_transferred: int
    change_id: str | None = None
    bitmap: str | None = None
    extra: dict[str, Path] = field(default_factory=dict)  # suffix -> partial file beside


@dataclass(frozen=True)
class Storage:
    """How a point is stored: LUKS-encrypted with ``key`` (None: plain), and whether
    its clusters are written compressed (``compression``: the qcow2 compression_type)."""

    key: Key | None = None
    compression: str | None = None


@dataclass(frozen=True)
class RunOptions:
    settings: Settings
    workdir: Path
    backup_id: str
    progress: Progress
    should_cancel: Callable[[], bool]
    speed: int | None = None
    storage: Storage = Storage()


class DiskSession(Protocol):
    def plan(self, want: Kind, previous: Previous | None) -> Plan: ...

    def copy(self, target: Path, plan: Plan, previous: Previous | None) -> Copied:
        """Write the restore point into ``target`` (a ``*.partial`` path, not yet created)."""
        ...

    def commit(self, keep: Iterable[str]) -> None:
        """The point is recorded: advance change tracking, dropping our markers
        (``dv-*`` bitmaps or checkpoints) except the new one and ``keep``."""
        ...

    def close(self) -> None:
        """Release the source; without a commit, leave tracking as it was before the run."""
        ...


class Source(Protocol):
    kind: ClassVar[str]

    def __init__(self, name: str, config: dict[str, Any]) -> None: ...

    @classmethod
    def validate(cls, config: dict[str, Any]) -> dict[str, Any]:
        """Normalized config, or InvalidSource; no I/O."""
        ...

    @classmethod
    def check(cls, config: dict[str, Any]) -> None:
        """InvalidSource unless what the config points at is there (files readable,
        sockets present); a source added ``unverified`` skips it."""
        ...

    def disk_count(self) -> int: ...

    def open_disk(self, index: int, opts: RunOptions) -> DiskSession: ...


MARKER_PREFIX = "dv-"


def tracking_name(backup_id: str) -> str:
    """The bitmap or checkpoint name that a restore point's change tracking starts from."""
    return f"{MARKER_PREFIX}{backup_id}"


def create_target(target: Path, plan: Plan, previous: Previous | None, opts: RunOptions) -> None:
    """A fresh qcow2: empty for a full, on top of the chain head for an incremental."""
    binary = opts.settings.QEMU_IMG_PATH
    storage = opts.storage
    # Relative: the chain keeps working wherever the repository is moved or copied.
    backing = previous.image.name if plan.backup_type == "incremental" and previous else None
    if storage.key is not None:
        cache = keys.template_dir(opts.settings)
        shutil.copyfile(keys.template(storage.key, cache, binary), target)
        image, objects = storage.key.image(target), storage.key.objects()
        qemu_img.resize(image, "qcow2", plan.virtual_size, objects=objects, binary=binary)
        if backing is not None:
            qemu_img.rebase(
                image, "qcow2", backing, "qcow2", unsafe=True, objects=objects, binary=binary
            )
        return
    options = {"compression_type": storage.compression} if storage.compression else None
    size = None if backing else plan.virtual_size
    fmt = "qcow2" if backing else None
    qemu_img.create(
        target, "qcow2", size, backing=backing, backing_fmt=fmt, options=options, binary=binary
    )


def check_present(kind: str, paths: Iterable[str], socket: bool = False) -> None:
    """InvalidSource naming each path that is missing, unreadable (or not a socket)."""
    from diskvault.backups.errors import InvalidSource

    bad = []
    for p in paths:
        path = Path(p)
        if not path.exists():
            bad.append(f"{p} does not exist")
        elif socket and not path.is_socket():
            bad.append(f"{p} is not a socket")
        elif not os.access(path, os.R_OK):
            bad.append(f"{p} is not readable by this server")
    if bad:
        raise InvalidSource(
            kind=kind,
            detail="; ".join(bad) + " (fix it, or add the source with unverified: true)",
        )


def disk_list(config: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """``disks`` as a list of dicts; a bare string becomes ``{key: value}``."""
    return [d if isinstance(d, dict) else {key: d} for d in config.get("disks", [])]


class PathDisks:
    """Sources whose disks are files or devices on this host, given by absolute path."""

    kind: ClassVar[str]

    def __init__(self, name: str, config: dict[str, Any]) -> None:
        self.name = name
        self.paths = [Path(d["path"]) for d in disk_list(config, "path")]

    @classmethod
    def validate(cls, config: dict[str, Any]) -> dict[str, Any]:
        from diskvault.backups.errors import InvalidSource

        disks = disk_list({"disks": config.get("disks") or [config.get("path")]}, "path")
        paths = [str(d.get("path") or "") for d in disks]
        if not paths or not all(os.path.isabs(p) for p in paths):
            raise InvalidSource(kind=cls.kind, detail="give 'disks': absolute paths")
        return {"disks": [{"path": p} for p in paths]}

    @classmethod
    def check(cls, config: dict[str, Any]) -> None:
        check_present(cls.kind, (d["path"] for d in config["disks"]))

    def disk_count(self) -> int:
        return len(self.paths)
