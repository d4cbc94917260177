"""Files under one directory on a local (or mounted network) filesystem.

Every key is resolved, symlinks included, and must land inside the root, so a key
or a symlink planted in a share can never read or overwrite anything outside it.
"""

from __future__ import annotations

import errno
import io
import os
import stat
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import IO, BinaryIO
from urllib.parse import quote

import structlog

from diskvault.fsutil import atomic_file, fsync_dir, rename_noreplace
from diskvault.storage.base import (
    BUFFER_SIZE,
    BaseProvider,
    Page,
    ProgressCallback,
    StorageFile,
    StreamReader,
    UploadSource,
    check_range,
    copy_stream,
    normalize_key,
    normalize_prefix,
    os_errors,
    source_errors,
)
from diskvault.storage.errors import InvalidKey, ObjectNotFound

log = structlog.get_logger(__name__)

# Large enough that one call moves a whole image chunk in-kernel (or reflinks it).
COPY_RANGE_CHUNK = 1 << 30

Parts = tuple[str, ...]


class LocalStorageProvider(BaseProvider):
    def __init__(self, root: Path | str, *, create: bool = False) -> None:
        path = Path(root)
        if create:
            path.mkdir(parents=True, exist_ok=True)
        if not path.is_dir():
            raise ObjectNotFound(key=str(path), storage="the local filesystem")
        self.root = path.resolve()
        self.url = self.root.as_uri()

    def _path(self, key: str, *, follow: bool) -> Path:
        """The checked path for ``key``: fully resolved, or (``follow=False``) the link itself."""
        norm = normalize_key(key)
        path = self.root.joinpath(*norm.split("/"))
        try:
            real = path.resolve()
            parent = path.parent.resolve()
        except (OSError, RuntimeError) as exc:
            raise InvalidKey(key=key, detail="it goes through a symlink loop") from exc
        if not (real.is_relative_to(self.root) and parent.is_relative_to(self.root)):
            raise InvalidKey(key=key, detail="it resolves outside the storage root via a symlink")
        return real if follow else parent / path.name

    def _file(self, key: str, st: os.stat_result) -> StorageFile:
        is_dir = stat.S_ISDIR(st.st_mode)
        return StorageFile(
            key=key,
            size=0 if is_dir else st.st_size,
            mtime=st.st_mtime,
            is_dir=is_dir,
            inode=st.st_ino,
            device=st.st_dev,
            nlink=st.st_nlink,
            url=f"{self.url}/{quote(os.fsencode(key))}",
        )

    def local_path(self, key: str) -> Path | None:
        return self._path(key, follow=True)

    def stat(self, key: str) -> StorageFile:
        path = self._path(key, follow=True)
        norm = normalize_key(key)
        with os_errors(norm, self.url):
            return self._file(norm, path.stat())

    def exists(self, key: str) -> bool:
        return self._path(key, follow=True).exists()

    # Listing -----------------------------------------------------------------------

    def scan(
        self, prefix: str = "", *, recursive: bool = True, page_size: int = 1000
    ) -> Iterator[Page]:
        # One walk for the whole scan, instead of re-walking to the cursor per page.
        entries = self._walk(prefix, recursive, None)
        while page := [*islice(entries, page_size)]:
            yield page

    def list(
        self,
        prefix: str = "",
        cursor: str | None = None,
        limit: int = 1000,
        *,
        recursive: bool = True,
    ) -> tuple[Page, str | None]:
        """Entries in path order; the cursor is the last key of the page."""
        page = [*islice(self._walk(prefix, recursive, cursor), limit + 1)]
        if len(page) > limit:
            return page[:limit], page[limit - 1].key
        return page, None

    def _walk(self, prefix: str, recursive: bool, after: str | None) -> Iterator[StorageFile]:
        norm = normalize_prefix(prefix)
        dir_key, _, name_prefix = norm.rpartition("/")
        base = self._path(dir_key, follow=True) if dir_key else self.root
        base_parts: Parts = tuple(dir_key.split("/")) if dir_key else ()
        after_parts = tuple(normalize_key(after).split("/")) if after else None
        yield from self._walk_dir(base, base_parts, name_prefix, recursive, after_parts)

    def _walk_dir(
        self, path: Path, parts: Parts, name_prefix: str, recursive: bool, after: Parts | None
    ) -> Iterator[StorageFile]:
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            # One unreadable folder in a messy share should not abort the whole scan.
            log.warning("storage.scan.skipped", path=str(path), error=exc.strerror)
            return
        for entry in entries:
            if not entry.name.startswith(name_prefix):
                continue
            key_parts = (*parts, entry.name)
            # Paths sort like tuples, so a subtree that sorts before the cursor and does
            # not contain it was listed on an earlier page.
            if after is not None and key_parts < after and after[: len(key_parts)] != key_parts:
                continue
            found = self._entry_stat(entry)
            if found is None:
                continue
            st, descend = found
            if recursive and stat.S_ISDIR(st.st_mode):
                if descend:
                    yield from self._walk_dir(Path(entry.path), key_parts, "", True, after)
                continue
            if after is None or key_parts > after:
                yield self._file("/".join(key_parts), st)

    def _entry_stat(self, entry: os.DirEntry[str]) -> tuple[os.stat_result, bool] | None:
        """Stat of a listable entry and whether to descend, or None to skip it.

        Symlinks are followed only to targets inside the root, and symlinked folders
        are not descended: their contents are inside the root and listed anyway, and
        this rules out loops. FIFOs, sockets and devices are never listed.
        """
        try:
            if entry.is_symlink():
                target = Path(entry.path).resolve()
                if not target.is_relative_to(self.root):
                    return None
                st, descend = target.stat(), False
            else:
                st, descend = entry.stat(follow_symlinks=False), True
        except (OSError, RuntimeError):
            return None  # vanished, dangling or looping
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            return None
        return st, descend

    # Bytes -------------------------------------------------------------------------

    def open_read(self, key: str, start: int = 0, end: int | None = None) -> BinaryIO:
        check_range(start, end)
        path = self._path(key, follow=True)
        with os_errors(normalize_key(key), self.url):
            raw = open(path, "rb", buffering=0)  # noqa: SIM115 - the caller closes the stream
        try:
            raw.seek(start)
        except BaseException:
            raw.close()
            raise
        limit = None if end is None else end - start
        return io.BufferedReader(StreamReader(raw, limit=limit))

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
        path = self._path(key, follow=False)
        self._check_destination(norm, overwrite)
        reader = UploadSource(src, expect=size, key=norm)
        with (
            source_errors(),
            os_errors(norm, self.url),
            atomic_file(path, overwrite=overwrite) as fh,
        ):
            copy_stream(reader, fh.write, progress=progress)
        return self.stat(norm)

    def copy(self, src: str, dst: str, *, overwrite: bool = False) -> StorageFile:
        src_norm, dst_norm = normalize_key(src), normalize_key(dst)
        src_path = self._path(src, follow=True)
        dst_path = self._path(dst, follow=False)
        self._check_destination(dst_norm, overwrite)
        with os_errors(src_norm, self.url):
            fin = open(src_path, "rb")  # noqa: SIM115 - closed by the with below
        with fin, os_errors(dst_norm, self.url), atomic_file(dst_path, overwrite=overwrite) as out:
            _copy_file(fin, out)
        return self.stat(dst_norm)

    def move(self, src: str, dst: str, *, overwrite: bool = False) -> StorageFile:
        src_norm, dst_norm = normalize_key(src), normalize_key(dst)
        src_path = self._path(src, follow=False)
        dst_path = self._path(dst, follow=False)
        with os_errors(src_norm, self.url):
            if stat.S_ISDIR(os.lstat(src_path).st_mode):
                raise InvalidKey(key=src, detail="it is a directory; move the files in it instead")
        if src_path == dst_path:
            return self.stat(dst_norm)
        with os_errors(dst_norm, self.url):
            dst_path.parent.mkdir(parents=True, exist_ok=True)
            try:
                (os.replace if overwrite else rename_noreplace)(src_path, dst_path)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                self.copy(src_norm, dst_norm, overwrite=overwrite)
                os.unlink(src_path)
            fsync_dir(dst_path.parent)
            if src_path.parent != dst_path.parent:
                fsync_dir(src_path.parent)
        return self.stat(dst_norm)

    def delete(self, key: str, *, missing_ok: bool = False) -> None:
        path = self._path(key, follow=False)
        try:
            with os_errors(normalize_key(key), self.url):
                os.unlink(path)
        except ObjectNotFound:
            if not missing_ok:
                raise


def _copy_file(src: io.BufferedReader, dst: io.BufferedWriter) -> None:
    """Copy in the kernel (a reflink on btrfs/XFS); fall back to a buffered loop."""
    copied = 0
    try:
        while n := os.copy_file_range(src.fileno(), dst.fileno(), COPY_RANGE_CHUNK):
            copied += n
    except OSError as exc:
        unsupported = (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL, errno.EPERM)
        if copied or exc.errno not in unsupported:
            raise
        copy_stream(src, dst.write, buffer_size=BUFFER_SIZE)
