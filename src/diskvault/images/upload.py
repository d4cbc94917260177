"""Streaming uploads: the file goes to disk, hashed on the way, in constant memory.

Two bodies are accepted: multipart/form-data (``curl -F file=@disk.vhdx``) and
the sparse stream of :mod:`diskvault.images.sparse` (``diskvault image upload``),
which carries only the file's data.

Starlette's ``request.form()`` spools the file to a temporary file first (a
second copy). Here ``python_multipart``'s streaming parser runs on
``request.stream()`` and file bytes are copied into one of a few large
buffers; full buffers are hashed in one thread and written in another while the
event loop fills the next, so the network, the hash and the disk overlap.

A multipart body is hashed with plain SHA-256 (every byte travelled anyway). A
sparse stream is hashed with the extents digest (:mod:`diskvault.images.digest`)
from its records, so its gaps cost nothing: hashing them as zeros would let a
few bytes of stream buy an hour of CPU. An upload is complete only when its
closing boundary (or end record) arrived and the file part's declared
Content-Length, if any, matches.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

from diskvault.fsutil import pwrite_all
from diskvault.images import sparse
from diskvault.images.digest import ExtentHasher
from diskvault.images.errors import InvalidUpload, UploadStalled, UploadTooLarge
from diskvault.storage.base import os_errors

MiB = 1024 * 1024
# Buffers are made only as the upload needs them: a slow upload holds one (1 MiB),
# a fast one at most BUFFERS, so 40 stalled clients cost 40 MiB, not 640.
BATCH = MiB
BUFFERS = 4
MAX_FIELDS_BYTES = 64 * 1024
FILE_FIELD = "file"
# Zero blocks of this size are not written: a sparse source stays sparse in TEMP_STORAGE_PATH.
SPARSE_BLOCK = 64 * 1024


@dataclass
class Received:
    fields: dict[str, str]
    filename: str | None
    size: int
    sha256: str | None  # plain SHA-256 (multipart)
    digest: str | None  # extents digest (sparse stream)


@dataclass
class _Part:
    headers: dict[str, str] = field(default_factory=dict)
    name: str = ""
    filename: str | None = None
    disposition: bytes = b""  # raw: parse_options_header would encode a str as latin-1
    value: bytearray = field(default_factory=bytearray)


def _write_sparse(fd: int, buf: bytearray, n: int, offset: int) -> None:
    """Write ``buf[:n]`` at ``offset``, skipping all-zero blocks (left as holes)."""
    view = memoryview(buf)
    for start, end in sparse.nonzero_runs(buf, n, SPARSE_BLOCK):
        pwrite_all(fd, view[start:end], offset + start)


class _Sink:
    """A few buffers: the event loop fills one while earlier ones are hashed and written.

    Hashing runs in one thread and writing in another, each in file order (both
    release the GIL). The loop waits only when every buffer is still in use, so a
    burst from the network does not stall the others.
    """

    def __init__(self, fd: int, limit: int, *, plain: bool) -> None:
        self.fd = fd
        self.limit = limit
        self.sha256 = hashlib.sha256() if plain else None
        self.digest = None if plain else ExtentHasher()
        self.size = 0
        self.buffers = 0  # made so far, at most BUFFERS
        self._free: list[bytearray] = []
        self._buf: bytearray | None = None
        self._n = 0
        self._written = 0
        self._hash_lane = ThreadPoolExecutor(1, thread_name_prefix="upload-hash")
        self._write_lane = ThreadPoolExecutor(1, thread_name_prefix="upload-write")
        # Work handed to the lanes, oldest first, with the buffer it holds.
        self._pending: deque[tuple[bytearray, list[asyncio.Future[None]]]] = deque()

    def _count(self, n: int) -> None:
        self.size += n
        if self.size > self.limit:
            raise UploadTooLarge(size=f"over {self.limit}", limit=self.limit)

    async def feed(self, data: memoryview) -> None:
        self._count(len(data))
        while data:
            if self._buf is None:
                while self._pending and all(f.done() for f in self._pending[0][1]):
                    await self._retire_oldest()
                if not self._free and self.buffers < BUFFERS:
                    self._free.append(bytearray(BATCH))
                    self.buffers += 1
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
        data = memoryview(buf)[:n]
        hashed = (
            self._hash_lane.submit(self.sha256.update, data)
            if self.sha256 is not None
            else self._hash_lane.submit(self._digest().update, self._written, data)
        )
        work = [
            asyncio.wrap_future(hashed),
            asyncio.wrap_future(
                self._write_lane.submit(_write_sparse, self.fd, buf, n, self._written)
            ),
        ]
        self._written += n
        self._pending.append((buf, work))

    def _digest(self) -> ExtentHasher:
        assert self.digest is not None
        return self.digest

    def zeros(self, n: int) -> None:
        """``n`` zero bytes at the current position: left as a hole, and not hashed."""
        self._count(n)
        self.flush()
        self._written += n

    def hexdigests(self) -> tuple[str | None, str | None]:
        """(plain SHA-256, extents digest): one of them, as the body kind allows."""
        if self.sha256 is not None:
            return self.sha256.hexdigest(), None
        return None, self._digest().hexdigest(self.size)

    async def _retire_oldest(self) -> None:
        buf, work = self._pending.popleft()
        await asyncio.wait(work)
        for future in work:
            future.result()
        self._free.append(buf)

    async def settle(self) -> None:
        """Wait for all handed-out work, raising the first error."""
        while self._pending:
            await self._retire_oldest()

    async def abandon(self) -> None:
        """Wait for the work in flight and drop its outcome: the upload failed already."""
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
        self.file_bytes = 0
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
        if name == "content-disposition":
            self.part.disposition = bytes(self._header_value).strip()
        self._header_name.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self.part.disposition)
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
            self.file_bytes += end - start
            return
        self.field_bytes += end - start
        if self.field_bytes > MAX_FIELDS_BYTES:
            raise InvalidUpload(f"form fields exceed {MAX_FIELDS_BYTES} bytes")
        self.part.value.extend(data[start:end])

    def check_complete(self) -> None:
        """Refuse a body that stopped early: no closing boundary, or a short file part."""
        if self.parser.state != MultipartState.END:
            raise InvalidUpload(
                "the multipart body ended before its closing boundary; the upload was cut "
                "short, upload again"
            )
        if self.file_part is None:
            raise InvalidUpload("the form has no 'file' part")
        declared = self.file_part.headers.get("content-length", "")
        if declared and (not declared.isdigit() or int(declared) != self.file_bytes):
            raise InvalidUpload(
                f"the file part declares Content-Length {declared} but {self.file_bytes} "
                "bytes arrived; upload again"
            )


def boundary_of(content_type: str) -> bytes:
    ctype, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise InvalidUpload("send multipart/form-data with a 'file' part (curl -F file=@disk.vhdx)")
    return boundary


async def _land(
    dest: Path, limit: int, body: Callable[[_Sink], Awaitable[None]], *, plain: bool
) -> _Sink:
    """Create ``dest`` (never overwriting), let ``body`` fill the sink, then flush it.

    ``dest`` is removed again on any error.
    """
    with os_errors(dest.name, "TEMP_STORAGE_PATH"):
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    sink = _Sink(fd, limit, plain=plain)
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
        form.check_complete()

    sink = await _land(dest, limit, body, plain=True)
    assert form.file_part is not None
    fields = {
        p.name: p.value.decode("utf-8", "replace") for p in form.parts if p is not form.file_part
    }
    return Received(fields, form.file_part.filename, sink.size, *sink.hexdigests())


async def idle_limited(chunks: AsyncIterator[bytes], timeout: float) -> AsyncIterator[bytes]:
    """``chunks``, failing with :class:`UploadStalled` when none arrives for ``timeout`` s.

    A client that stops sending holds a connection, a file and a buffer; this ends it.
    """
    iterator = aiter(chunks)
    while True:
        try:
            async with asyncio.timeout(timeout):  # a timer per chunk, no task
                chunk = await anext(iterator)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise UploadStalled(
                timeout=f"{timeout:g}", setting="DISKVAULT_UPLOAD_IDLE_TIMEOUT_S"
            ) from None
        yield chunk


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

    sink = await _land(dest, limit, body, plain=False)
    return Received({}, None, sink.size, *sink.hexdigests())
