"""File actions shared by apply and rollback, on any pair of providers.

Nothing here overwrites: moves and copies pass ``overwrite=False``, hard links
are made with ``link()`` (which fails on an existing name), and the only
in-place replacement (a duplicate swapped for a hard link to its kept twin, or
back) is done only after the caller proved both have the same SHA-256.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from diskvault.fsutil import fsync_dir
from diskvault.organizer.errors import BadLocation
from diskvault.storage import StorageProvider
from diskvault.storage.base import os_errors


def sha256(provider: StorageProvider, key: str) -> str:
    return provider.hash(key, "sha256")


def local(provider: StorageProvider, key: str) -> Path:
    path = provider.local_path(key)
    if path is None:
        raise BadLocation(location=provider.url, detail="hard links need a local location")
    return path


def transfer(
    src_p: StorageProvider, src: str, dst_p: StorageProvider, dst: str, *, move: bool
) -> None:
    """Copy (or move) ``src`` to ``dst``, natively within one provider, streamed across two."""
    if src_p is dst_p:
        if move:
            src_p.move(src, dst, overwrite=False)
        else:
            src_p.copy(src, dst, overwrite=False)
        return
    size = src_p.stat(src).size
    with src_p.open_read(src) as stream:
        dst_p.write(dst, stream, size=size, overwrite=False)
    if move:
        src_p.delete(src)


def link(provider: StorageProvider, src: str, dst: str) -> None:
    """A new name ``dst`` for the file ``src`` (same filesystem)."""
    source, target = local(provider, src), local(provider, dst)
    with os_errors(dst, provider.url):
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(source, target, follow_symlinks=False)
        fsync_dir(target.parent)


def same_inode(provider: StorageProvider, a: str, b: str) -> bool:
    sa, sb = provider.stat(a), provider.stat(b)
    return (sa.device, sa.inode) == (sb.device, sb.inode)


def _swap_in(provider: StorageProvider, key: str, make: str, source: Path) -> None:
    target = local(provider, key)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.partial")
    with os_errors(key, provider.url):
        try:
            if make == "link":
                os.link(source, tmp, follow_symlinks=False)
            else:
                shutil.copyfile(source, tmp)
                fd = os.open(tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(target.parent)


def replace_with_link(provider: StorageProvider, key: str, kept: str) -> None:
    """Make ``key`` a hard link to ``kept`` (callers checked their content is equal)."""
    _swap_in(provider, key, "link", local(provider, kept))


def replace_with_copy(provider: StorageProvider, key: str, kept: str) -> None:
    """Give ``key`` its own copy of ``kept``'s bytes, breaking a hard link."""
    _swap_in(provider, key, "copy", local(provider, kept))
