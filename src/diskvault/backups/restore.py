"""Whole-disk restore of a restore point: to a new file in a chosen format, to an
NBD export, or into the image library. The result is compared with the restore
point (``qemu-img compare``) before it counts as restored.

File-level restore is the ``restore`` domain's; it gets a point's chain with
:func:`diskvault.backups.service.restore_point` and protects mounted points with
:func:`diskvault.backups.service.register_busy_check`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from diskvault.backups.errors import (
    InvalidRestoreTarget,
    NbdTargetUnavailable,
    RestoreMismatch,
    RestoreTargetRefused,
)
from diskvault.backups.keys import Key
from diskvault.backups.sources.daemon import JOB_PREFIX, start_daemon
from diskvault.backups.sources.nbd import blockdev_server
from diskvault.config import Settings
from diskvault.storage import redact_url
from diskvault.tools import nbd, qemu_img
from diskvault.tools.process import ToolError
from diskvault.tools.qsd import QsdError

FORMATS = ("qcow2", "raw", "vmdk", "vdi", "vhdx", "vpc")
Percent = Callable[[float], None]
Progress = Callable[[int, int], None]


def check_destination(settings: Settings, raw: str) -> Path:
    """The new file ``raw`` names, with symlinks and ``..`` resolved, inside the roots."""
    if "\0" in raw:
        raise InvalidRestoreTarget(target="the given path", detail="a path cannot hold a NUL byte")
    path = Path(raw)
    if not path.is_absolute() or path.name in ("", ".", ".."):
        raise InvalidRestoreTarget(target=raw, detail="give an absolute path to a new file")
    roots = [r.resolve() for r in settings.restore_roots]
    # Refuse by name first, so paths outside the roots cannot be probed.
    _inside_roots(raw, Path(os.path.normpath(path)), roots)
    try:
        parent = path.parent.resolve(strict=True)
    except (OSError, RuntimeError):
        raise InvalidRestoreTarget(target=raw, detail=f"{path.parent} does not exist") from None
    dest = parent / path.name
    _inside_roots(raw, dest, roots)
    if not parent.is_dir():
        raise InvalidRestoreTarget(target=raw, detail=f"{path.parent} is not a directory")
    partial = dest.with_name(dest.name + ".partial")
    if os.path.lexists(dest) or os.path.lexists(partial):
        raise InvalidRestoreTarget(target=raw, detail="it already exists; choose a new path")
    return dest


def _inside_roots(raw: str, path: Path, roots: list[Path]) -> None:
    if not any(path.is_relative_to(root) for root in roots):
        where = ", ".join(map(str, roots)) or "none are configured"
        raise RestoreTargetRefused(
            target=raw,
            detail=f"it is outside the restore roots ({where})",
            setting="DISKVAULT_BACKUP_RESTORE_ROOTS",
        )


NBD_SETTING = "DISKVAULT_BACKUP_RESTORE_NBD_TARGETS"


def check_nbd_target(settings: Settings, url: str) -> None:
    """Only NBD servers an administrator listed; ``host:port`` or a unix socket path."""
    shown = redact_url(url)
    if any(ord(ch) < 0x20 for ch in url):
        raise InvalidRestoreTarget(target="the given URL", detail="it holds control characters")
    parts = urlsplit(url)
    try:
        if parts.scheme == "nbd+unix":
            server = os.path.normpath(parse_qs(parts.query).get("socket", [""])[0] or ".")
        elif parts.scheme == "nbd" and parts.hostname:
            server = f"{_host(parts.hostname)}:{parts.port or 10809}"
        else:
            raise InvalidRestoreTarget(
                target=shown, detail="give an nbd://host:port/export or nbd+unix:// URL"
            )
    except ValueError:
        raise InvalidRestoreTarget(target=shown, detail="invalid port") from None
    allowed = {_allowed_entry(e) for e in settings.BACKUP_RESTORE_NBD_TARGETS}
    if server not in allowed:
        listed = ", ".join(sorted(allowed)) or "none are configured"
        raise RestoreTargetRefused(
            target=shown,
            detail=f"NBD server {server} is not an allowed restore target ({listed})",
            setting=NBD_SETTING,
        )


def _host(host: str) -> str:
    host = host.lower().strip("[]")
    return f"[{host}]" if ":" in host else host


def _allowed_entry(entry: str) -> str:
    """``host``, ``host:port``, ``[v6]``, ``[v6]:port``, a bare IPv6 address, or a socket path."""
    entry = entry.strip()
    if entry.startswith("/"):
        return os.path.normpath(entry)
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        port = rest.removeprefix(":")
    elif entry.count(":") == 1:
        host, port = entry.split(":")
    else:
        host, port = entry, ""
    return f"{_host(host)}:{port or 10809}"


@dataclass(frozen=True)
class Crypt:
    """How to open an encrypted point: its key, and the files of its chain (full first)."""

    key: Key
    chain: Sequence[Path]

    def source(self, image: Path) -> qemu_img.Image:
        return self.key.image(image, len(self.chain) - 1)


def _verified(
    settings: Settings,
    image: Path,
    dest: str | qemu_img.Image,
    fmt: str,
    point_id: str,
    crypt: Crypt | None,
) -> None:
    if not qemu_img.compare(
        crypt.source(image) if crypt else image,
        dest,
        "qcow2",
        fmt,
        objects=crypt.key.objects() if crypt else (),
        binary=settings.QEMU_IMG_PATH,
    ):
        target = dest.path if isinstance(dest, qemu_img.Image) else dest
        raise RestoreMismatch(target=str(target), id=point_id)


def to_file(
    settings: Settings,
    point_id: str,
    image: Path,
    dest: Path,
    fmt: str,
    *,
    progress: Percent | None = None,
    should_cancel: Callable[[], bool] | None = None,
    crypt: Crypt | None = None,
) -> dict[str, Any]:
    """``qemu-img convert`` of the chain into ``dest`` via ``*.partial``, then compare."""
    part = dest.with_name(dest.name + ".partial")
    try:
        qemu_img.convert(
            crypt.source(image) if crypt else image,
            "qcow2",
            part,
            fmt,
            progress=progress,
            should_cancel=should_cancel,
            objects=crypt.key.objects() if crypt else (),
            binary=settings.QEMU_IMG_PATH,
        )
        _verified(settings, image, str(part), fmt, point_id, crypt)
        with open(part, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(part, dest)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return {"target": "file", "path": str(dest), "format": fmt, "verified": True}


def to_nbd(
    settings: Settings,
    point_id: str,
    image: Path,
    url: str,
    *,
    virtual_size: int,
    workdir: Path,
    progress: Progress | None = None,
    should_cancel: Callable[[], bool] | None = None,
    crypt: Crypt | None = None,
) -> dict[str, Any]:
    """QSD copies the chain onto the export (zeros included), then compare."""
    check_nbd_target(settings, url)
    timeout = settings.BACKUP_RESTORE_NBD_TIMEOUT_S
    try:
        size = nbd.export_size(url, timeout=timeout)
    except (ToolError, ValueError):
        raise NbdTargetUnavailable(target=redact_url(url), timeout=timeout) from None
    if size < virtual_size:
        raise InvalidRestoreTarget(target=url, detail=f"it holds {size} bytes, need {virtual_size}")
    server = start_daemon(workdir, settings, "restore")
    try:
        if crypt is None:
            server.blockdev_add("src", "qcow2", filename=image, read_only=True)
            src = "src"
        else:
            server.add_secret("srckey", crypt.key.data)
            encrypt = {"format": "luks", "key-secret": "srckey"}
            src = server.open_chain(crypt.chain, "src", encrypt=encrypt)
        server.qmp("blockdev-add", {"driver": "raw", "node-name": "dst"}, file=blockdev_server(url))
        job = f"{JOB_PREFIX}restore"
        server.blockdev_backup(job, src, "dst", sync="full")
        server.wait_job(job, progress=progress, should_cancel=should_cancel)
        with contextlib.suppress(QsdError):
            server.blockdev_del("dst")
    finally:
        server.stop()
    # With a key, compare takes --image-opts for both sides: the export by its options.
    opts = blockdev_server(url)
    opts |= {f"server.{k}": v for k, v in opts.pop("server").items()}
    dest = qemu_img.Image(url, "raw", file=opts) if crypt else url
    _verified(settings, image, dest, "raw", point_id, crypt)
    return {"target": "nbd", "url": url, "verified": True}


def to_image(
    settings: Settings,
    point_id: str,
    image: Path,
    *,
    name: str,
    owner: str | None,
    progress: Percent | None = None,
    should_cancel: Callable[[], bool] | None = None,
    crypt: Crypt | None = None,
) -> dict[str, Any]:
    """A self-contained qcow2 handed to the image library, which inspects and stores it
    (decrypted: the library holds plain images)."""
    from diskvault.db.engine import session_scope
    from diskvault.images import service as images

    with session_scope(settings.DATABASE_URL) as s:
        row = images.create(
            s, settings, name=name, owner=owner, source=f"backup:{point_id}", claimed_format="qcow2"
        )
        image_id = row.id
    staged = images.staged_path(settings, image_id)
    try:
        to_file(
            settings,
            point_id,
            image,
            staged,
            "qcow2",
            progress=progress,
            should_cancel=should_cancel,
            crypt=crypt,
        )
    except Exception as exc:
        images.reject(settings, image_id, exc)
        raise
    images.start_processing(settings, image_id, "qcow2")
    return {"target": "image", "image_id": image_id, "verified": True}
