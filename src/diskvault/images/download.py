"""Downloads with single HTTP byte ranges (RFC 9110 section 14): images, and the files
of restore mounts through :func:`local_file`.

A local file goes out through Starlette's ``FileResponse``, which serves the range
itself; diskvault only decides first, in one place, which ranges it honours: a
single well-formed one. Other syntax (other units, several ranges) gets the whole
file, as RFC 9110 allows, and a range past the end gets 416 as problem+json. A file
that is not local (an image in S3) is streamed from its store.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any

from fastapi.responses import FileResponse, Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.types import Receive, Scope, Send

from diskvault.images.errors import ImageBusy, RangeNotSatisfiable
from diskvault.images.models import Image, ImageStatus
from diskvault.images.store import ImageStore

CHUNK = 1024 * 1024
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end_exclusive)`` of a single range, or None to send the whole file.

    Syntax we do not serve (other units, several ranges, malformed) is ignored,
    as RFC 9110 allows; a well-formed range outside the file raises 416.
    """
    if not header:
        return None
    unit, _, spec = header.partition("=")
    first, dash, last = spec.strip().partition("-")
    if unit.strip().lower() != "bytes" or "," in spec or not dash:
        return None
    if not (first.isdigit() or first == "") or not (last.isdigit() or last == ""):
        return None
    if first == "":
        if last == "":
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(range=header, size=size)
        return max(0, size - suffix), size
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        raise RangeNotSatisfiable(range=header, size=size)
    end = min(int(last) + 1, size) if last else size
    return start, end


class LocalFile(FileResponse):
    """``FileResponse`` told which ranges diskvault honours, calling ``on_chunk`` with the
    file offset reached after each chunk sent (a restore mount keeps itself alive and
    asks the kernel to read ahead from there)."""

    chunk_size = CHUNK

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        stat: os.stat_result,
        headers: Mapping[str, str],
        honour_range: bool,
        start: int = 0,
        on_chunk: Callable[[int], None] | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        super().__init__(
            path,
            headers=headers,
            media_type="application/octet-stream",
            stat_result=stat,
            background=background,
        )
        self.honour_range, self.start, self.on_chunk = honour_range, start, on_chunk

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.honour_range:
            scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k != b"range"]}
        on_chunk = self.on_chunk
        if on_chunk is not None:
            inner, offset = send, self.start

            async def send(message: MutableMapping[str, Any]) -> None:
                nonlocal offset
                if message["type"] == "http.response.body":
                    offset += len(message.get("body", b""))
                    on_chunk(offset)
                await inner(message)

        await super().__call__(scope, receive, send)


def local_file(
    path: str | os.PathLike[str],
    stat: os.stat_result,
    range_header: str | None,
    headers: Mapping[str, str],
    *,
    on_chunk: Callable[[int], None] | None = None,
    background: BackgroundTask | None = None,
) -> Response:
    """A local file with ``Accept-Ranges``; raises :class:`RangeNotSatisfiable` (416)."""
    selected = parse_range(range_header, stat.st_size)
    return LocalFile(
        path,
        stat=stat,
        headers={"Accept-Ranges": "bytes", **headers},
        honour_range=selected is not None,
        start=selected[0] if selected else 0,
        on_chunk=on_chunk,
        background=background,
    )


def filename(image: Image) -> str:
    stem = _UNSAFE_NAME.sub("_", image.name).strip("._") or image.id
    return f"{stem}.{image.format}"


def response(store: ImageStore, image: Image, range_header: str | None) -> Response:
    if image.status != ImageStatus.READY or image.storage_key is None:
        raise ImageBusy(
            id=image.id, status=image.status.value, detail="only READY images can be downloaded"
        )
    key = image.storage_key
    headers = {
        "Content-Disposition": f'attachment; filename="{filename(image)}"',
        # Declared so the app's gzip middleware leaves disk images alone.
        "Content-Encoding": "identity",
    }
    if image.sha256 or image.digest:
        headers["ETag"] = f'"{image.sha256 or image.digest}"'
    local = store.local_path(key)
    if local is not None:
        return local_file(local, os.stat(local), range_header, headers)
    return _streamed(store, key, range_header, headers)


def _streamed(
    store: ImageStore, key: str, range_header: str | None, headers: dict[str, str]
) -> StreamingResponse:
    """What FileResponse cannot serve: an image in a remote store, read by range."""
    size = store.size(key)
    selected = parse_range(range_header, size)
    start, end = selected or (0, size)
    stream = store.open_range(key, start, end)

    def body() -> Iterator[bytes]:
        with stream:
            while chunk := stream.read(CHUNK):
                yield chunk

    headers = {**headers, "Accept-Ranges": "bytes", "Content-Length": str(end - start)}
    status = 200
    if selected is not None:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    return StreamingResponse(
        body(), status_code=status, headers=headers, media_type="application/octet-stream"
    )
