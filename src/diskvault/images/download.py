"""Image downloads with single HTTP byte ranges (RFC 9110 section 14)."""

from __future__ import annotations

import re
from collections.abc import Iterator

from fastapi.responses import StreamingResponse

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


def filename(image: Image) -> str:
    stem = _UNSAFE_NAME.sub("_", image.name).strip("._") or image.id
    return f"{stem}.{image.format}"


def response(store: ImageStore, image: Image, range_header: str | None) -> StreamingResponse:
    if image.status != ImageStatus.READY or image.storage_key is None:
        raise ImageBusy(
            id=image.id, status=image.status.value, detail="only READY images can be downloaded"
        )
    key = image.storage_key
    size = store.size(key)
    selected = parse_range(range_header, size)
    start, end = selected or (0, size)
    stream = store.open_range(key, start, end)

    def body() -> Iterator[bytes]:
        with stream:
            while chunk := stream.read(CHUNK):
                yield chunk

    headers = {
        "Accept-Ranges": "bytes",
        "Content-Length": str(end - start),
        "Content-Disposition": f'attachment; filename="{filename(image)}"',
        # Declared so the app's gzip middleware leaves disk images alone.
        "Content-Encoding": "identity",
    }
    if image.sha256 or image.digest:
        headers["ETag"] = f'"{image.sha256 or image.digest}"'
    status = 200
    if selected is not None:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    return StreamingResponse(
        body(), status_code=status, headers=headers, media_type="application/octet-stream"
    )
