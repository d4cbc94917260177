"""Downloads that keep holes: all-zero blocks are skipped with a seek, not written, so a
256 MiB image holding 13 MiB takes about 13 MiB on disk (as ``cp --sparse`` does)."""

from __future__ import annotations

from typing import BinaryIO

BLOCK = 4096
_ZERO = bytes(BLOCK)


class SparseWriter:
    """Write a stream to ``fh`` from its current offset (what was after it is dropped:
    a skipped block must read as zeros); call :meth:`close` at the end to write what is
    buffered and set the size (a trailing hole)."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.pending = bytearray()
        fh.truncate(fh.tell())

    def write(self, chunk: bytes) -> None:
        self.pending += chunk
        whole = len(self.pending) - len(self.pending) % BLOCK
        if whole:
            self._emit(memoryview(self.pending)[:whole])
            del self.pending[:whole]

    def _emit(self, data: memoryview) -> None:
        start = 0  # first byte of the data run not yet written
        for offset in range(0, len(data), BLOCK):
            block = data[offset : offset + BLOCK]
            if block == _ZERO[: len(block)]:
                if offset > start:
                    self.fh.write(data[start:offset])
                self.fh.seek(len(block), 1)
                start = offset + len(block)
        if start < len(data):
            self.fh.write(data[start:])

    def close(self) -> None:
        if self.pending:
            self._emit(memoryview(bytes(self.pending)))
            self.pending.clear()
        self.fh.truncate(self.fh.tell())
