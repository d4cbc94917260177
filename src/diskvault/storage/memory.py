"""An in-process provider for tests of other packages (``memory://name``).

Providers built from the same ``memory://name`` URL share one store, so code that
saves a storage URL and resolves it again sees the same objects.
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
from dataclasses import dataclass
from typing import IO, BinaryIO

from diskvault.storage.base import (
    BaseProvider,
    Page,
    ProgressCallback,
    StorageFile,
    UploadSource,
    check_range,
    copy_stream,
    normalize_key,
    normalize_prefix,
    source_errors,
)
from diskvault.storage.errors import DestinationExists, ObjectNotFound


@dataclass(frozen=True, slots=True)
class _Blob:
    data: bytes
    mtime: float
    etag: str


class MemoryStorageProvider(BaseProvider):
    _named: dict[str, dict[str, _Blob]] = {}
    _named_lock = threading.Lock()

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.url = f"memory://{name}"
        self._lock = threading.Lock()
        if name:
            with self._named_lock:
                self._blobs = self._named.setdefault(name, {})
        else:
            self._blobs = {}

    def _file(self, key: str, blob: _Blob) -> StorageFile:
        return StorageFile(
            key=key, size=len(blob.data), mtime=blob.mtime, etag=blob.etag, url=f"{self.url}/{key}"
        )

    def _get(self, key: str) -> tuple[str, _Blob]:
        norm = normalize_key(key)
        with self._lock:
            blob = self._blobs.get(norm)
        if blob is None:
            raise ObjectNotFound(key=norm, storage=self.url)
        return norm, blob

    def stat(self, key: str) -> StorageFile:
        return self._file(*self._get(key))

    def list(
        self,
        prefix: str = "",
        cursor: str | None = None,
        limit: int = 1000,
        *,
        recursive: bool = True,
    ) -> tuple[Page, str | None]:
        """Entries in key order, as on S3; the cursor is the last key consumed."""
        norm = normalize_prefix(prefix)
        with self._lock:
            blobs = dict(self._blobs)
        keys = sorted(k for k in blobs if k.startswith(norm) and (cursor is None or k > cursor))
        # (entry, last key it covers): a folder entry covers all the keys under it.
        entries: list[tuple[StorageFile, str]] = []
        i = 0
        while i < len(keys) and len(entries) <= limit:
            key = keys[i]
            slash = key.find("/", len(norm))
            if recursive or slash < 0:
                entries.append((self._file(key, blobs[key]), key))
                i += 1
                continue
            folder = key[: slash + 1]
            j = i
            while j < len(keys) and keys[j].startswith(folder):
                j += 1
            entries.append(
                (StorageFile(key=key[:slash], size=0, mtime=0.0, is_dir=True), keys[j - 1])
            )
            i = j
        if len(entries) > limit:
            return [entry for entry, _ in entries[:limit]], entries[limit - 1][1]
        return [entry for entry, _ in entries], None

    def open_read(self, key: str, start: int = 0, end: int | None = None) -> BinaryIO:
        check_range(start, end)
        _, blob = self._get(key)
        return io.BytesIO(blob.data[start:end])

    def write(
        self,
        key: str,
        src: IO[bytes],
        *,
        size: int | None = None,
        progress: ProgressCallback | None = None,
        overwrite: bool = True,
    ) -> StorageFile:
        norm = normalize_key(key)
        self._check_destination(norm, overwrite)
        out = io.BytesIO()
        with source_errors():
            copy_stream(UploadSource(src, expect=size, key=norm), out.write, progress=progress)
        data = out.getvalue()
        blob = _Blob(data, time.time(), hashlib.md5(data, usedforsecurity=False).hexdigest())
        self._put(norm, blob, overwrite)
        return self._file(norm, blob)

    def _put(self, key: str, blob: _Blob, overwrite: bool) -> None:
        with self._lock:
            if not overwrite and key in self._blobs:
                raise DestinationExists(key=key, storage=self.url)
            self._blobs[key] = blob

    def copy(self, src: str, dst: str, *, overwrite: bool = False) -> StorageFile:
        _, blob = self._get(src)
        norm = normalize_key(dst)
        self._put(norm, blob, overwrite)
        return self._file(norm, blob)

    def delete(self, key: str, *, missing_ok: bool = False) -> None:
        norm = normalize_key(key)
        with self._lock:
            found = self._blobs.pop(norm, None)
        if found is None and not missing_ok:
            raise ObjectNotFound(key=norm, storage=self.url)

    @classmethod
    def forget(cls, name: str) -> None:
        """Drop the shared store behind ``memory://name``."""
        with cls._named_lock:
            cls._named.pop(name, None)
