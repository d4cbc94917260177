"""Bounded reads of untrusted image headers, and what a header parser detects.

Every read goes through :class:`Reader`, which bounds it by size and by a total
budget, so a hostile header cannot make the parsers read or allocate much.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from diskvault.images.errors import Reason, UnsafeImage

KiB = 1024
MiB = 1024 * KiB
# Covers the ISO 9660 descriptor at 32 KiB and the VHDX region table at 192 KiB.
HEAD_SIZE = 256 * KiB
MAX_READ = 2 * MiB
READ_BUDGET = 4 * MiB


@dataclass
class Detection:
    format: str
    virtual_size: int
    details: dict[str, object] = field(default_factory=dict)


def bad(detail: str) -> UnsafeImage:
    return UnsafeImage(Reason.INVALID_HEADER, detail)


class Reader:
    """Bounded positional reads from an open file descriptor."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size
        self._budget = READ_BUDGET
        self.head = self._pread(0, min(size, HEAD_SIZE))
        self.tail = self._pread(size - 512, 512) if size >= 512 else b""

    def at(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset``; header offsets pointing outside the file are rejected."""
        if offset < 0 or length < 0 or offset + length > self.size:
            raise bad(f"a header points outside the file (offset {offset}, length {length})")
        if offset + length <= len(self.head):
            return self.head[offset : offset + length]
        if length > MAX_READ or length > self._budget:
            raise bad(f"headers would need more than {READ_BUDGET // MiB} MiB to be read")
        self._budget -= length
        return self._pread(offset, length)

    def _pread(self, offset: int, length: int) -> bytes:
        chunks: list[bytes] = []
        got = 0
        while got < length:
            chunk = os.pread(self.fd, length - got, offset + got)
            if not chunk:
                raise UnsafeImage(Reason.UNREADABLE, "the file shrank while it was being read")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)
