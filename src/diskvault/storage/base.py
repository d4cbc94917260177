"""The storage provider contract, shared by every backend, and the byte-moving helpers.

Keys are relative POSIX paths (``images/win11.qcow2``) on every provider, so a key
that is valid on S3 is valid on local disk and can never climb out of a root.
Progress callbacks receive the number of bytes moved since the previous call (the
boto3 convention); S3 transfers call them from worker threads.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, BinaryIO, Protocol, runtime_checkable

from diskvault.fsutil import atomic_file
from diskvault.storage.errors import (
    DestinationExists,
    InvalidKey,
    ObjectNotFound,
    SizeMismatch,
    StorageAccessDenied,
    StorageError,
    StorageFull,
)

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

BUFFER_SIZE = 1024 * 1024

ProgressCallback = Callable[[int], object]
ByteSource = IO[bytes] | io.RawIOBase


@dataclass(frozen=True, slots=True)
class StorageFile:
    key: str
    size: int
    mtime: float  # seconds since the epoch, UTC
    etag: str | None = None
    is_dir: bool = False
    # Local only: lets the organizer recognise hard links (same device and inode).
    inode: int | None = None
    device: int | None = None
    nlink: int | None = None
    url: str = ""


Page = list[StorageFile]


@runtime_checkable
class StorageProvider(Protocol):
    """What images, backups and the organizer need from a place that holds files."""

    url: str  # redacted: safe to log and store

    def scan(
        self, prefix: str = "", *, recursive: bool = True, page_size: int = 1000
    ) -> Iterator[Page]:
        """Yield pages of entries under ``prefix`` (a string prefix, as in S3)."""
        ...

    def list(
        self,
        prefix: str = "",
        cursor: str | None = None,
        limit: int = 1000,
        *,
        recursive: bool = True,
    ) -> tuple[Page, str | None]:
        """One page and an opaque cursor for the next one (None at the end)."""
        ...

    def stat(self, key: str) -> StorageFile: ...

    def open_read(self, key: str, start: int = 0, end: int | None = None) -> BinaryIO:
        """Stream bytes ``[start, end)``; ``end=None`` reads to the end of the object."""
        ...

    def write(
        self,
        key: str,
        src: IO[bytes],
        *,
        size: int | None = None,
        progress: ProgressCallback | None = None,
        overwrite: bool = True,
    ) -> StorageFile:
        """Store ``src`` under ``key`` atomically: the key appears only when complete."""
        ...

    def upload_file(
        self, local_path: Path, key: str, progress: ProgressCallback | None = None
    ) -> StorageFile: ...

    def download_file(
        self, key: str, local_path: Path, progress: ProgressCallback | None = None
    ) -> Path:
        """Copy ``key`` to ``local_path`` via ``*.partial``, fsync and rename."""
        ...

    def move(self, src: str, dst: str, *, overwrite: bool = False) -> StorageFile: ...

    def copy(self, src: str, dst: str, *, overwrite: bool = False) -> StorageFile: ...

    def delete(self, key: str, *, missing_ok: bool = False) -> None: ...

    def exists(self, key: str) -> bool: ...

    def hash(self, key: str, algo: str = "sha256") -> str: ...

    def local_path(self, key: str) -> Path | None:
        """The real file path when tools can work on it in place, else None."""
        ...


def normalize_key(key: str, *, allow_empty: bool = False) -> str:
    """Validate a key and return its canonical form (no empty or ``.`` parts)."""
    if not isinstance(key, str):
        raise InvalidKey(key=key, detail="keys are strings")
    if "\x00" in key:
        raise InvalidKey(key=key, detail="keys cannot contain NUL bytes")
    if key.startswith("/"):
        raise InvalidKey(key=key, detail="absolute paths are not accepted")
    parts = [part for part in key.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise InvalidKey(key=key, detail="'..' components are not accepted")
    if not parts and not allow_empty:
        raise InvalidKey(key=key, detail="the key is empty")
    return "/".join(parts)


def normalize_prefix(prefix: str) -> str:
    """Like :func:`normalize_key` but empty is fine and a trailing ``/`` is kept."""
    norm = normalize_key(prefix, allow_empty=True)
    return norm + "/" if norm and prefix.endswith("/") else norm


def check_range(start: int, end: int | None) -> None:
    if start < 0 or (end is not None and end < start):
        raise ValueError(f"bad byte range [{start}, {end})")


def copy_stream(
    src: ByteSource,
    write: Callable[[memoryview], int | None],
    *,
    progress: ProgressCallback | None = None,
    buffer_size: int = BUFFER_SIZE,
) -> int:
    """Copy until EOF through one buffer; ``write`` may write less than asked."""
    buf = bytearray(buffer_size)
    view = memoryview(buf)
    total = 0
    while True:
        n = read_into(src, view)
        if not n:
            return total
        chunk = view[:n]
        while chunk:
            written = write(chunk)
            # Buffered writers return None or the full length; raw ones may be short.
            chunk = chunk[len(chunk) if written is None else written :]
        total += n
        if progress is not None:
            progress(n)


def read_into(src: ByteSource, view: memoryview) -> int:
    """``src.readinto`` when the stream has it, else ``read`` plus one copy."""
    method = getattr(src, "readinto", None)
    if method is not None:
        return method(view) or 0
    data = src.read(len(view)) or b""
    view[: len(data)] = data
    return len(data)


def hash_stream(src: ByteSource, algo: str = "sha256") -> str:
    hasher = hashlib.new(algo)
    copy_stream(src, hasher.update)
    return hasher.hexdigest()


class StreamReader(io.RawIOBase):
    """A raw stream over ``src`` (anything with ``read``) that stops after ``limit`` bytes."""

    def __init__(self, src: ByteSource, *, limit: int | None = None) -> None:
        super().__init__()
        self._src = src
        self._remaining = limit

    def readable(self) -> bool:
        return True

    def readinto(self, b: WriteableBuffer) -> int:
        view = memoryview(b).cast("B")
        if self._remaining is not None:
            view = view[: self._remaining]
        n = read_into(self._src, view) if view else 0
        if self._remaining is not None:
            self._remaining -= n
        return n

    def close(self) -> None:
        try:
            self._src.close()
        finally:
            super().close()


class SourceFailed(Exception):
    """Carries an error raised by the caller's source stream past storage error mapping."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class UploadSource(StreamReader):
    """The caller's stream during a write: counts bytes and shields its errors.

    Reaching EOF at a length other than ``expect`` raises :class:`SizeMismatch`, so a
    truncated upload fails before anything is published. The source's own errors
    (a dropped client, say) travel as :class:`SourceFailed` so they are not mistaken
    for the storage's errors; :func:`source_errors` re-raises the original.
    """

    def __init__(self, src: ByteSource, *, expect: int | None, key: str) -> None:
        super().__init__(src)
        self._expect = expect
        self._key = key
        self._count = 0

    def readinto(self, b: WriteableBuffer) -> int:
        if not memoryview(b).nbytes:
            return 0
        try:
            n = super().readinto(b)
        except Exception as exc:
            raise SourceFailed(exc) from exc
        self._count += n
        expect = self._expect
        if expect is not None and (self._count > expect or (n == 0 and self._count != expect)):
            raise SizeMismatch(key=self._key, expected=expect, actual=self._count)
        return n

    def close(self) -> None:
        # The caller opened the source and closes it.
        io.RawIOBase.close(self)


@contextmanager
def source_errors() -> Iterator[None]:
    try:
        yield
    except SourceFailed as exc:
        raise exc.error from None


@contextmanager
def os_errors(key: str, storage: str) -> Iterator[None]:
    """Turn OSError into the storage error a user can act on."""
    try:
        yield
    except OSError as exc:
        code = exc.errno
        if code in (errno.ENOENT, errno.ENOTDIR):
            raise ObjectNotFound(key=key, storage=storage) from exc
        if code in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFull(key=key, storage=storage) from exc
        if code == errno.EEXIST:
            raise DestinationExists(key=key, storage=storage) from exc
        if code == errno.EISDIR:
            raise InvalidKey(key=key, detail="it is a directory, not a file") from exc
        if code in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise StorageAccessDenied(key=key, storage=storage, detail=exc.strerror) from exc
        raise StorageError(detail=f"{key} in {storage}: {exc.strerror or exc}") from exc


class BaseProvider:
    """Behaviour every provider shares, written once against the protocol methods.

    Methods take ``self: StorageProvider`` (a protocol self-type, mypy's idiom for
    mixins), so mypy checks that each subclass provides what they call.
    """

    url: str

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def move(self: StorageProvider, src: str, dst: str, *, overwrite: bool = False) -> StorageFile:
        """Copy then delete, for stores without a rename."""
        if normalize_key(src) == normalize_key(dst):
            return self.stat(dst)
        moved = self.copy(src, dst, overwrite=overwrite)
        self.delete(src)
        return moved

    def scan(
        self: StorageProvider, prefix: str = "", *, recursive: bool = True, page_size: int = 1000
    ) -> Iterator[Page]:
        cursor: str | None = None
        while True:
            page, cursor = self.list(prefix, cursor, page_size, recursive=recursive)
            if page:
                yield page
            if cursor is None:
                return

    def exists(self: StorageProvider, key: str) -> bool:
        try:
            self.stat(key)
        except ObjectNotFound:
            return False
        return True

    def hash(self: StorageProvider, key: str, algo: str = "sha256") -> str:
        with self.open_read(key) as stream:
            return hash_stream(stream, algo)

    def upload_file(
        self: StorageProvider, local_path: Path, key: str, progress: ProgressCallback | None = None
    ) -> StorageFile:
        with os_errors(str(local_path), "the local filesystem"), open(local_path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            return self.write(key, fh, size=size, progress=progress)

    def download_file(
        self: StorageProvider, key: str, local_path: Path, progress: ProgressCallback | None = None
    ) -> Path:
        with (
            self.open_read(key) as stream,
            os_errors(str(local_path), "the local filesystem"),
            atomic_file(local_path) as fh,
        ):
            copy_stream(stream, fh.write, progress=progress)
        return local_path

    def local_path(self, key: str) -> Path | None:
        return None

    def _check_destination(self: StorageProvider, key: str, overwrite: bool) -> None:
        if not overwrite and self.exists(key):
            raise DestinationExists(key=key, storage=self.url)
