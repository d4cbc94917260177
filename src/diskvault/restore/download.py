"""Streaming files and directories out of a restore mount.

A file is sent by Starlette's FileResponse, a single HTTP Range honoured (206/416).
A directory is generated as a tar (PAX, so long and unicode names survive) or a zip on the fly,
member by member: nothing is staged on disk and memory stays at one chunk.
Symlinks go into the archive as symlinks; they are never followed.
"""

from __future__ import annotations

import os
import stat
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import quote

from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask

from diskvault.images.download import local_file
from diskvault.restore.browse import OPEN_FLAGS, Location, Target, walk
from diskvault.restore.errors import NotAFile

CHUNK = 1024 * 1024
PREFETCH = 8 * CHUNK
BLOCK = tarfile.BLOCKSIZE
Format = Literal["tar", "zip"]
Touch = Callable[[], None]


def disposition(filename: str) -> str:
    """``attachment`` with an ASCII fallback and the exact UTF-8 name (RFC 6266)."""
    fallback = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename
    )
    exact = quote(filename, safe="", errors="replace")  # names that are not UTF-8 get '?'
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{exact}"


def read_range(fd: int, start: int, end: int, touch: Touch) -> Iterator[bytes]:
    """``[start, end)`` of ``fd`` in chunks. Each chunk must be a fresh ``bytes``:
    the server may still hold the previous one when the next is read."""
    os.posix_fadvise(fd, start, end - start, os.POSIX_FADV_SEQUENTIAL)
    pos = start
    while pos < end:
        # Ask for the next chunks now, so the chain is read while this one is sent.
        os.posix_fadvise(fd, pos + CHUNK, PREFETCH, os.POSIX_FADV_WILLNEED)
        chunk = os.pread(fd, min(CHUNK, end - pos), pos)
        if not chunk:
            # Cannot happen on a read-only mount; keep the declared length regardless.
            chunk = bytes(min(CHUNK, end - pos))
        pos += len(chunk)
        touch()
        yield chunk


def file_response(
    loc: Location, target: Target, range_header: str | None, touch: Touch
) -> Response:
    """The file through Starlette's FileResponse, by the descriptor already opened (with
    O_NOFOLLOW, under the mount): ``/proc/self/fd/N`` reopens that very file, so a
    symlink swapped in meanwhile is never followed. The descriptor is closed after."""
    if target.kind != "file":
        raise NotAFile(path=loc.path, kind=target.kind)
    headers = {
        "Content-Disposition": disposition(loc.name),
        # Declared so the app's gzip middleware leaves the bytes (and ranges) alone.
        "Content-Encoding": "identity",
    }
    fd = target.fd

    def sent(offset: int) -> None:
        # Ask for the next chunks now, so the chain is read while this one is sent.
        os.posix_fadvise(fd, offset, PREFETCH, os.POSIX_FADV_WILLNEED)
        touch()

    return local_file(
        f"/proc/self/fd/{fd}",
        target.stat,
        range_header,
        headers,
        on_chunk=sent,
        background=BackgroundTask(target.close),
    )


def members(target: Target, top: str) -> Iterator[tuple[str, int, str, os.stat_result]]:
    """The directory itself, then everything below it, as archive names under ``top``."""
    yield top, -1, "", target.stat
    for rel, parent, name, st in walk(target.fd):
        yield f"{top}/{rel}", parent, name, st


def file_chunks(parent: int, name: str, size: int, touch: Touch) -> Iterator[bytes]:
    fd = os.open(name, OPEN_FLAGS, dir_fd=parent)
    try:
        yield from read_range(fd, 0, size, touch)
    finally:
        os.close(fd)


def tar_stream(target: Target, top: str, touch: Touch) -> Iterator[bytes]:
    written = 0
    for arcname, parent, name, st in members(target, top):
        info = tarfile.TarInfo(arcname)
        info.mode, info.uid, info.gid = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
        info.mtime = int(st.st_mtime)
        if stat.S_ISDIR(st.st_mode):
            info.type = tarfile.DIRTYPE
        elif stat.S_ISLNK(st.st_mode):
            info.type, info.linkname = tarfile.SYMTYPE, os.readlink(name, dir_fd=parent)
        elif stat.S_ISREG(st.st_mode):
            info.type, info.size = tarfile.REGTYPE, st.st_size
        else:
            continue  # FIFOs, sockets and device nodes hold no data to restore
        header = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        written += len(header)
        yield header
        if info.type == tarfile.REGTYPE:
            yield from file_chunks(parent, name, st.st_size, touch)
            pad = -st.st_size % BLOCK
            written += st.st_size + pad
            yield bytes(pad)
    end = 2 * BLOCK
    end += -(written + end) % tarfile.RECORDSIZE
    yield bytes(end)


class _Sink:
    """A write-only, unseekable file for :class:`zipfile.ZipFile` that we drain."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def drain(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


class _RawNameInfo(zipfile.ZipInfo):
    """A member whose name may hold bytes that are not UTF-8 (surrogate-escaped).

    Valid UTF-8 names get the UTF-8 flag, as zipfile does; any other name is
    written as its raw bytes without the flag, which readers take as CP437,
    instead of raising half-way through the stream.
    """

    def _encodeFilenameFlags(self) -> tuple[bytes, int]:
        try:
            return super()._encodeFilenameFlags()  # type: ignore[misc]
        except UnicodeEncodeError:
            return os.fsencode(self.filename), self.flag_bits & ~0x800


def zip_info(arcname: str, st: os.stat_result) -> zipfile.ZipInfo:
    when = datetime.fromtimestamp(max(st.st_mtime, 315532800), UTC)  # zip starts in 1980
    info = _RawNameInfo(arcname, when.timetuple()[:6])
    info.external_attr = (st.st_mode & 0xFFFF) << 16
    info.create_system = 3  # unix, so the mode bits above are honoured
    return info


def zip_stream(target: Target, top: str, touch: Touch) -> Iterator[bytes]:
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for arcname, parent, name, st in members(target, top):
            if stat.S_ISDIR(st.st_mode):
                info = zip_info(arcname + "/", st)
                info.external_attr |= 0x10  # MS-DOS directory flag
                info.CRC = info.compress_size = info.file_size = 0  # mkdir() leaves them unset
                archive.mkdir(info)
            elif stat.S_ISLNK(st.st_mode):
                link = os.readlink(os.fsencode(name), dir_fd=parent)  # raw bytes
                archive.writestr(zip_info(arcname, st), link)
            elif stat.S_ISREG(st.st_mode):
                info = zip_info(arcname, st)
                info.file_size = st.st_size
                with archive.open(info, "w", force_zip64=st.st_size >= zipfile.ZIP64_LIMIT) as out:
                    for chunk in file_chunks(parent, name, st.st_size, touch):
                        out.write(chunk)
                        yield sink.drain()
            yield sink.drain()
    yield sink.drain()


def directory_response(
    loc: Location, target: Target, fmt: Format, touch: Touch
) -> StreamingResponse:
    top = loc.name
    generate = zip_stream if fmt == "zip" else tar_stream

    def body() -> Iterator[bytes]:
        try:
            for chunk in generate(target, top, touch):
                if chunk:
                    yield chunk
        finally:
            target.close()

    headers = {
        "Content-Disposition": disposition(f"{top}.{fmt}"),
        "Content-Encoding": "identity",
    }
    media = "application/zip" if fmt == "zip" else "application/x-tar"
    return StreamingResponse(body(), headers=headers, media_type=media)


def response(
    loc: Location, target: Target, fmt: Format, range_header: str | None, touch: Touch
) -> Response:
    if target.kind == "dir":
        return directory_response(loc, target, fmt, touch)
    return file_response(loc, target, range_header, touch)
