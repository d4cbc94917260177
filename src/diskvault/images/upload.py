"""Streaming uploads: the file goes to disk, hashed on the way, in constant memory.

Two bodies are accepted: multipart/form-data (``curl -F file=@disk.vhdx``) and
the sparse stream of :mod:`diskvault.images.sparse` (``diskvault image upload``),
which carries only the file's data.

Starlette's ``request.form()`` spools the file to a temporary file first (a
second copy). Here ``python_multipart``'s streaming parser runs on
``request.stream()`` and file bytes are copied into one of a few large
buffers; full buffers are hashed in one thread and written in another while the
event loop fills the next, so the network, the hash and the disk overlap.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from python_multipart.multipart import MultipartParser, parse_options_header

from diskvault.images import sparse
from diskvault.images.errors import InvalidUpload, UploadTooLarge
from diskvault.storage.base import os_errors

MiB = 1024 * 1024
BATCH = 4 * MiB
BUFFERS = 4
MAX_FIELDS_BYTES = 64 * 1024
FILE_FIELD = "file"
# Zero blocks of this size are not written: a sparse source stays sparse in TEMP_STORAGE_PATH.
SPARSE_BLOCK = 64 * 1024
_ZERO_BATCH = memoryview(bytes(BATCH))


@dataclass
class Received:
    fields: dict[str, str]
    filename: str | None
    size: int
    sha256: str


@dataclass
class _Part:
    headers: dict[str, str] = field(default_factory=dict)
    name: str = ""
    filename: str | None = None
    value: bytearray = field(default_factory=bytearray)


def _write_sparse(fd: int, buf: bytearray, n: int, offset: int) -> None:
    """Write ``buf[:n]`` at ``offset``, skipping all-zero blocks (left as holes)."""
    view = memoryview(buf)
    for start, end in sparse.nonzero_runs(buf, n, SPARSE_BLOCK):
        _pwrite_all(fd, view[start:end], offset + start)


def _hash_zeros(hasher: Any, n: int, stop: threading.Event) -> None:
    # A stream may declare a gap of up to the size limit (a TiB takes ten minutes to
    # hash): stop as soon as the upload is abandoned.
    while n and not stop.is_set():
        k = min(n, BATCH)
        hasher.update(_ZERO_BATCH[:k])
        n -= k


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


class _Sink:
    """A few buffers: the event loop fills one while earlier ones are hashed and written.

    Hashing runs in one thread and writing in another, each in file order (both
    release the GIL). The loop waits only when every buffer is still in use, so a
    burst from the network or a long run of zeros to hash does not stall the others.
    """

    def __init__(self, fd: int, limit: int) -> None:
        self.fd = fd
        self.limit = limit
        self.hasher = hashlib.sha256()
        self.size = 0
        self._free = [bytearray(BATCH) for _ in range(BUFFERS)]
        self._buf: bytearray | None = None
        self._n = 0
        self._written = 0
        self._abandoned = threading.Event()
        self._hash_lane = ThreadPoolExecutor(1, thread_name_prefix="upload-sha256")
        self._write_lane = ThreadPoolExecutor(1, thread_name_prefix="upload-write")
        # Work handed to the lanes, oldest first, with the buffer it holds (None for zeros).
        self._pending: deque[tuple[bytearray | None, list[asyncio.Future[None]]]] = deque()

    def _count(self, n: int) -> None:
        self.size += n
        if self.size > self.limit:
            raise UploadTooLarge(size=f"over {self.limit}", limit=self.limit)

    async def feed(self, data: memoryview) -> None:
        self._count(len(data))
        while data:
            if self._buf is None:
                while not self._free:
                    await self._retire_oldest()
                self._buf, self._n = self._free.pop(), 0
            k = min(len(data), BATCH - self._n)
            self._buf[self._n : self._n + k] = data[:k]
            self._n += k
            data = data[k:]
            if self._n == BATCH:
                self.flush()

    def flush(self) -> None:
        """Hand the buffer being filled to the lanes."""
        buf, n = self._buf, self._n
        self._buf, self._n = None, 0
        if buf is None:
            return
        if not n:
            self._free.append(buf)
            return
        work = [
            asyncio.wrap_future(self._hash_lane.submit(self.hasher.update, memoryview(buf)[:n])),
            asyncio.wrap_future(
                self._write_lane.submit(_write_sparse, self.fd, buf, n, self._written)
            ),
        ]
        self._written += n
        self._pending.append((buf, work))

    def zeros(self, n: int) -> None:
        """``n`` zero bytes at the current position: hashed in order, left as a hole."""
        self._count(n)
        self.flush()
        work = asyncio.wrap_future(
            self._hash_lane.submit(_hash_zeros, self.hasher, n, self._abandoned)
        )
        self._pending.append((None, [work]))
        self._written += n

    async def _retire_oldest(self) -> None:
        buf, work = self._pending.popleft()
        await asyncio.wait(work)
        for future in work:
            future.result()
        if buf is not None:
            self._free.append(buf)

    async def settle(self) -> None:
        """Wait for all handed-out work, raising the first error."""
        while self._pending:
            await self._retire_oldest()

    async def abandon(self) -> None:
        """Wait for the work in flight and drop its outcome: the upload failed already."""
        self._abandoned.set()
        work = [future for _, futures in self._pending for future in futures]
        self._pending.clear()
        if work:
            await asyncio.wait(work)
            for future in work:
                if not future.cancelled():
                    future.exception()

    def close(self) -> None:
        self._hash_lane.shutdown()
        self._write_lane.shutdown()


class _Form:
    """Parser callbacks; file data is queued and fed to the sink after each chunk."""

    def __init__(self, boundary: bytes) -> None:
        self.parts: list[_Part] = []
        self.pending: list[memoryview] = []
        self.file_part: _Part | None = None
        self.field_bytes = 0
        self._header_name = bytearray()
        self._header_value = bytearray()
        callbacks: Any = {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, s, e: self._header_name.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self._header_value.extend(d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
        }
        self.parser = MultipartParser(boundary, callbacks)

    @property
    def part(self) -> _Part:
        return self.parts[-1]

    def _part_begin(self) -> None:
        self.parts.append(_Part())

    def _header_end(self) -> None:
        name = self._header_name.decode("latin-1").strip().lower()
        self.part.headers[name] = self._header_value.decode("utf-8", "replace").strip()
        self._header_name.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self.part.headers.get("content-disposition", ""))
        self.part.name = params.get(b"name", b"").decode("utf-8", "replace")
        filename = params.get(b"filename")
        self.part.filename = filename.decode("utf-8", "replace") if filename is not None else None
        if self.part.name == FILE_FIELD:
            if self.file_part is not None:
                raise InvalidUpload("send exactly one 'file' part")
            self.file_part = self.part

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self.part is self.file_part:
            self.pending.append(memoryview(data)[start:end])
            return
        self.field_bytes += end - start
        if self.field_bytes > MAX_FIELDS_BYTES:
            raise InvalidUpload(f"form fields exceed {MAX_FIELDS_BYTES} bytes")
        self.part.value.extend(data[start:end])


def boundary_of(content_type: str) -> bytes:
    ctype, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise InvalidUpload("send multipart/form-data with a 'file' part (curl -F file=@disk.vhdx)")
    return boundary


async def _land(dest: Path, limit: int, body: Callable[[_Sink], Awaitable[None]]) -> _Sink:
    """Create ``dest`` (never overwriting), let ``body`` fill the sink, then flush it.

    ``dest`` is removed again on any error.
    """
    with os_errors(dest.name, "TEMP_STORAGE_PATH"):
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    sink = _Sink(fd, limit)
    try:
        with os_errors(dest.name, "TEMP_STORAGE_PATH"):
            await body(sink)
            sink.flush()
            await sink.settle()
            os.ftruncate(fd, sink.size)
    except BaseException:
        await sink.abandon()
        os.close(fd)
        dest.unlink(missing_ok=True)
        raise
    finally:
        sink.close()
    os.close(fd)
    return sink


async def receive(
    chunks: AsyncIterator[bytes], content_type: str, dest: Path, *, limit: int
) -> Received:
    """Parse a multipart body from ``chunks``, writing the ``file`` part to ``dest``."""
    form = _Form(boundary_of(content_type))

    async def body(sink: _Sink) -> None:
        async for chunk in chunks:
            try:
                form.parser.write(chunk)
            except InvalidUpload:
                raise
            except Exception as exc:  # the parser's own errors: a malformed body
                raise InvalidUpload(f"malformed multipart body: {exc}") from exc
            for view in form.pending:
                await sink.feed(view)
            form.pending.clear()
        form.parser.finalize()

    sink = await _land(dest, limit, body)
    if form.file_part is None:
        dest.unlink(missing_ok=True)
        raise InvalidUpload("the form has no 'file' part")
    fields = {
        p.name: p.value.decode("utf-8", "replace") for p in form.parts if p is not form.file_part
    }
    return Received(fields, form.file_part.filename, sink.size, sink.hasher.hexdigest())


async def receive_sparse(chunks: AsyncIterator[bytes], dest: Path, *, limit: int) -> Received:
    """Write a sparse stream (see :mod:`diskvault.images.sparse`) to ``dest``; holes stay holes."""
    decoder = sparse.Decoder(limit)

    async def body(sink: _Sink) -> None:
        async for chunk in chunks:
            for item in decoder.feed(chunk):
                if isinstance(item, int):
                    sink.zeros(item)
                else:
                    await sink.feed(item)
        decoder.finish()

    sink = await _land(dest, limit, body)
    return Received({}, None, sink.size, sink.hasher.hexdigest())
