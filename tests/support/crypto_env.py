"""Encrypted-repository helpers: a guest disk full of a marker string, keys, and checks
that an encrypted point holds the right data and that no plaintext leaked."""

from __future__ import annotations

from pathlib import Path

from diskvault.backups import keys, service
from diskvault.config import Settings
from diskvault.db.engine import session_scope
from diskvault.tools import qemu_img

MiB = 1024 * 1024
MARKER = b"DV-GUEST-MARKER-7f3a9c"


def marked_disk(path: Path, tmp: Path, size: int) -> Path:
    """A qcow2 whose data repeats a marker string (text-like, so it compresses)."""
    raw = tmp / f"{path.stem}.seed"
    with open(raw, "wb") as fh:
        fh.truncate(size)
        for offset in range(0, size // 2, MiB):
            fh.seek(offset)
            fh.write((MARKER + b" some guest text\n") * 4096)
    qemu_img.convert(raw, "raw", path, "qcow2")
    raw.unlink()
    return path


def make_key(path: Path) -> Path:
    keys.create(path)
    return path


def opened(settings: Settings, backup_id: str) -> service.RestorePoint:
    with session_scope(settings.DATABASE_URL) as s:
        return service.restore_point(s, backup_id)


def same_as(settings: Settings, backup_id: str, saved: Path) -> bool:
    rp = opened(settings, backup_id)
    assert rp.crypt is not None
    return qemu_img.compare(
        rp.crypt.source(rp.image), saved, "qcow2", "qcow2", objects=rp.crypt.key.objects()
    )


def has_marker(*roots: Path) -> list[Path]:
    found = []
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                with open(path, "rb") as fh:
                    if MARKER in fh.read():
                        found.append(path)
    return found
