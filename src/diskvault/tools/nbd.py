"""NBD exports through libnbd's Python binding: sizes and extent maps.

An incremental backup from an NBD source that publishes
``qemu:dirty-bitmap:<name>`` copies only the extents this module reports dirty.
Every call runs on libnbd's asynchronous API under one deadline, so a server
that never answers (or answers the handshake and then stalls) costs at most
``timeout`` seconds; libnbd's synchronous calls have no timeout of their own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import nbd

from diskvault.tools.process import ToolError, ToolTimeout

TIMEOUT = 60.0
BASE_ALLOCATION = "base:allocation"
MAX_REQUEST = 1 << 30  # bytes asked per block-status request; servers may answer less


class NbdError(ToolError):
    tool_name = "libnbd"


@dataclass(frozen=True)
class Extent:
    offset: int
    length: int
    type: int
    description: str


def unix_url(socket: Path, export: str = "") -> str:
    """``nbd+unix:///<export>?socket=<path>``"""
    return f"nbd+unix:///{quote(export, safe='')}?socket={quote(str(socket), safe='/')}"


class _Client:
    """One connection, with every wait bounded by the caller's deadline."""

    def __init__(self, url: str, timeout: float, contexts: tuple[str, ...] = ()) -> None:
        self.url, self.timeout = url, timeout
        self.deadline = time.monotonic() + timeout
        self.h = nbd.NBD()
        for context in contexts:
            self.h.add_meta_context(context)
        self._call(lambda: self.h.aio_connect_uri(url))
        self._wait(lambda: not self.h.aio_is_connecting())
        if not self.h.aio_is_ready():
            raise NbdError(stderr=f"{url}: the server closed the connection during the handshake")

    def _call(self, fn: Callable[[], object]) -> object:
        try:
            return fn()
        except nbd.Error as exc:
            raise NbdError(stderr=f"{self.url}: {exc.string}") from exc

    def _wait(self, done: Callable[[], bool]) -> None:
        while not self._call(done):
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise ToolTimeout(cmd=["libnbd", self.url], timeout=self.timeout)
            wait_ms = max(1, int(left * 1000))
            self._call(lambda: self.h.poll(wait_ms))  # noqa: B023 (called at once)

    def size(self) -> int:
        return int(self._call(self.h.get_size))  # type: ignore[call-overload]

    def extents(self, context: str) -> list[Extent]:
        if not self._call(lambda: self.h.can_meta_context(context)):
            raise NbdError(
                stderr=f"{self.url}: the export does not offer metadata context {context}"
            )
        size, offset = self.size(), 0
        out: list[Extent] = []
        got: list[tuple[int, int]] = []

        def extent(meta: str, start: int, entries: list[int], err: object) -> int:
            if meta == context:
                got.extend(zip(entries[0::2], entries[1::2], strict=True))
            return 0

        while offset < size:
            got.clear()
            asked = min(MAX_REQUEST, size - offset)
            cookie = self._call(lambda: self.h.aio_block_status(asked, offset, extent))  # noqa: B023
            self._wait(lambda: self.h.aio_command_completed(cookie))  # noqa: B023
            if not got:
                raise NbdError(stderr=f"{self.url}: no extents returned at offset {offset}")
            for length, flags in got:
                length = min(length, size - offset)
                if out and out[-1].type == flags and out[-1].offset + out[-1].length == offset:
                    last = out.pop()
                    out.append(Extent(last.offset, last.length + length, flags, ""))
                else:
                    out.append(Extent(offset, length, flags, ""))
                offset += length
                if offset >= size:
                    break
        return out

    def close(self) -> None:
        # The binding closes the handle (and its socket) when the last reference goes.
        del self.h


def export_size(url: str, *, timeout: float = TIMEOUT) -> int:
    client = _Client(url, timeout)
    try:
        return client.size()
    finally:
        client.close()


def map_extents(
    url: str, context: str = BASE_ALLOCATION, *, timeout: float = TIMEOUT
) -> list[Extent]:
    """All extents of a metadata context, merged runs of one type each."""
    client = _Client(url, timeout, (context,))
    try:
        return client.extents(context)
    finally:
        client.close()


def dirty_extents(url: str, bitmap: str, *, timeout: float = TIMEOUT) -> list[Extent]:
    """Extents set in the exported dirty bitmap ``bitmap`` (type bit 0 is dirty)."""
    extents = map_extents(url, f"qemu:dirty-bitmap:{bitmap}", timeout=timeout)
    return [e for e in extents if e.type & 1]
