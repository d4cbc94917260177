"""Where image files live: IMAGE_STORAGE_PATH, or any storage URL (S3) in IMAGE_STORE_URL.

qemu-img needs local files, so work happens in TEMP_STORAGE_PATH and finished
files are published into the store: a rename when the store is a local
directory on the same filesystem, a sparse copy across filesystems, an upload
to S3. Reads for qemu-img come straight from a local store, or from a staged
download.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from diskvault.config import Settings
from diskvault.fsutil import fsync_dir
from diskvault.images.files import copy_sparse
from diskvault.storage import LocalStorageProvider, StorageProvider, provider_from_url
from diskvault.storage.base import os_errors


class ImageStore:
    def __init__(self, settings: Settings) -> None:
        url = settings.IMAGE_STORE_URL
        self.provider: StorageProvider = (
            provider_from_url(url, settings=settings)
            if url
            else LocalStorageProvider(settings.image_dir, create=True)
        )
        self.temp = settings.temp_dir
        self.temp.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def new_key(image_id: str, fmt: str) -> str:
        # A fresh name per write, so a new file never replaces the one being read.
        return f"{image_id}/{secrets.token_hex(4)}.{fmt}"

    def temp_path(self, name: str) -> Path:
        return self.temp / name

    def local_path(self, key: str) -> Path | None:
        return self.provider.local_path(key)

    def publish(self, path: Path, key: str, *, keep: bool = False) -> None:
        """Put the finished local file ``path`` into the store under ``key``.

        ``keep=True`` leaves ``path`` in place (e.g. as the source of a conversion
        that follows); otherwise it is moved.
        """
        dest = self.provider.local_path(key)
        if dest is None:
            self.provider.upload_file(path, key)
            if not keep:
                path.unlink()
            return
        with os_errors(key, self.provider.url):
            dest.parent.mkdir(parents=True, exist_ok=True)
            if keep:
                copy_sparse(path, dest)
                return
            try:
                os.rename(path, dest)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                copy_sparse(path, dest)
                path.unlink()
            fsync_dir(dest.parent)

    @contextmanager
    def staged(self, key: str, cached: Path | None = None) -> Iterator[Path]:
        """A local path to read ``key`` from: the store's own file, ``cached``, or a download."""
        local = self.provider.local_path(key)
        if local is not None:
            yield local
            return
        if cached is not None and cached.exists():
            yield cached
            return
        path = self.temp / f"stage-{secrets.token_hex(8)}-{Path(key).name}"
        self.provider.download_file(key, path)
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)

    def fetch(self, key: str, path: Path) -> Path:
        """A private local copy of ``key`` at ``path`` (to modify, then publish under a new key)."""
        self.provider.download_file(key, path)
        return path

    def open_range(self, key: str, start: int, end: int) -> BinaryIO:
        return self.provider.open_read(key, start, end)

    def size(self, key: str) -> int:
        return self.provider.stat(key).size

    def delete(self, key: str) -> None:
        self.provider.delete(key, missing_ok=True)
        local = self.provider.local_path(key)
        if local is not None:
            with contextlib.suppress(OSError):
                local.parent.rmdir()  # the image's folder, once empty
