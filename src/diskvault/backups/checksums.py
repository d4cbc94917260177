"""Per-block checksums of backup files, recorded at backup time and re-read by
verify and by copy jobs, so a flipped byte is reported with its file and offset.

xxh3-128 over 1 MiB blocks: fast enough to run after every backup without
halving its throughput, and the block index gives the offset of any damage.
"""

from __future__ import annotations

import base64
import mmap
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import xxhash

from diskvault.fsutil import fsync_path

ALGO = "xxh3_128"
BLOCK_SIZE = 1024 * 1024
DIGEST_SIZE = 16


@dataclass(frozen=True)
class Mismatch:
    file: str
    offset: int
    length: int
    detail: str

    def describe(self) -> str:
        return f"{self.file} at offset {self.offset} (+{self.length}): {self.detail}"


def _blocks(read_into: Callable[[memoryview], int]) -> Iterator[tuple[bytes, int]]:
    """Digest and length of each BLOCK_SIZE block, through one reused buffer."""
    buf = bytearray(BLOCK_SIZE)
    view = memoryview(buf)
    while True:
        filled = 0
        while filled < BLOCK_SIZE:
            n = read_into(view[filled:])
            if not n:
                break
            filled += n
        if not filled:
            return
        yield xxhash.xxh3_128_digest(view[:filled]), filled
        if filled < BLOCK_SIZE:
            return


def _reader(fh: IO[bytes]) -> Callable[[memoryview], int]:
    def read(view: memoryview) -> int:
        return fh.readinto(view) or 0  # type: ignore[attr-defined]

    return read


def digest_stream(fh: IO[bytes], progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    digests = bytearray()
    size = 0
    for digest, n in _blocks(_reader(fh)):
        digests += digest
        size += n
        if progress is not None:
            progress(n)
    return {
        "algo": ALGO,
        "block_size": BLOCK_SIZE,
        "size": size,
        "digest": xxhash.xxh3_128_hexdigest(bytes(digests)),
        "blocks": base64.b64encode(bytes(digests)).decode(),
    }


def digest_file(path: Path, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Like :func:`digest_stream`, hashing the file through mmap: no copy out of the
    page cache, so checksumming a just-written backup costs little next to writing it."""
    with open(path, "rb", buffering=0) as fh:
        size = os.fstat(fh.fileno()).st_size
        if not size:
            return digest_stream(fh, progress)
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            mapped.madvise(mmap.MADV_SEQUENTIAL)
            view = memoryview(mapped)
            try:
                digests = bytearray()
                for start in range(0, size, BLOCK_SIZE):
                    digests += xxhash.xxh3_128_digest(view[start : start + BLOCK_SIZE])
                    if progress is not None:
                        progress(min(BLOCK_SIZE, size - start))
            finally:
                view.release()
    return {
        "algo": ALGO,
        "block_size": BLOCK_SIZE,
        "size": size,
        "digest": xxhash.xxh3_128_hexdigest(bytes(digests)),
        "blocks": base64.b64encode(bytes(digests)).decode(),
    }


def compare_stream(
    fh: IO[bytes],
    recorded: dict[str, Any],
    name: str,
    progress: Callable[[int], None] | None = None,
) -> list[Mismatch]:
    """Every block whose digest differs from ``recorded``, plus a size difference."""
    if recorded.get("algo") != ALGO or recorded.get("block_size") != BLOCK_SIZE:
        return [Mismatch(name, 0, 0, f"unknown checksum scheme {recorded.get('algo')}")]
    expected = base64.b64decode(recorded["blocks"])
    found: list[Mismatch] = []
    offset = 0
    for i, (digest, n) in enumerate(_blocks(_reader(fh))):
        want = expected[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE]
        if digest != want:
            found.append(Mismatch(name, offset, n, "data differs from the checksum recorded"))
        offset += n
        if progress is not None:
            progress(n)
    if offset != recorded["size"]:
        found.append(
            Mismatch(name, offset, 0, f"file is {offset} bytes, recorded {recorded['size']}")
        )
    return found


def compare_file(
    path: Path, recorded: dict[str, Any], progress: Callable[[int], None] | None = None
) -> list[Mismatch]:
    try:
        with open(path, "rb", buffering=0) as fh:
            return compare_stream(fh, recorded, path.name, progress)
    except FileNotFoundError:
        return [Mismatch(path.name, 0, 0, "file is missing")]


def seal(files: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """fsync each file of a new restore point while checksumming it, rather than one
    pass after the other; ``files`` maps the name each will be published under to the
    file written (its ``*.partial``), and so do the checksums returned.

    The checksums are read with read(), not through mmap: a page fault waits for the
    page lock that the concurrent writeback holds, read() copies cached pages without
    it. For a 2.4 GB full, read() was done in 0.2-0.4 s of a 0.6-1.2 s fsync; through
    mmap the checksums took as long as the fsync."""
    with ThreadPoolExecutor(len(files) or 1, thread_name_prefix="fsync") as pool:
        synced = [pool.submit(fsync_path, path) for path in files.values()]
        sums = {}
        for name, path in files.items():
            with open(path, "rb", buffering=0) as fh:
                sums[name] = digest_stream(fh)
        for future in synced:
            future.result()
    return sums
