"""Issue 17 point 6: downloads keep holes (zero blocks are not written)."""

from __future__ import annotations

import os
import random
from pathlib import Path

from diskvault.cli.sparse import BLOCK, SparseWriter

MiB = 1024 * 1024


def test_zero_blocks_become_holes_and_bytes_stay_the_same(tmp_path: Path) -> None:
    rng = random.Random(17)
    size = 32 * MiB
    data = bytearray(size)
    for offset in (0, 5 * MiB + 123, 20 * MiB):  # three 1 MiB runs, one unaligned
        data[offset : offset + MiB] = rng.randbytes(MiB)
    out = tmp_path / "out.raw"
    with open(out, "wb") as fh:
        writer = SparseWriter(fh)
        pos = 0
        while pos < size:  # odd chunk sizes, as a network stream gives them
            step = rng.randint(1, 300_000)
            writer.write(bytes(data[pos : pos + step]))
            pos += step
        writer.close()
    assert out.read_bytes() == bytes(data)  # trailing zeros included: size is right
    allocated = os.stat(out).st_blocks * 512
    assert allocated <= 3 * MiB + 4 * BLOCK, allocated


def test_resume_continues_at_the_offset(tmp_path: Path) -> None:
    out = tmp_path / "out.raw"
    out.write_bytes(b"a" * 10_000)
    with open(out, "r+b") as fh:
        fh.seek(6000)
        writer = SparseWriter(fh)
        writer.write(bytes(3 * BLOCK) + b"b" * 10)
        writer.close()
    assert out.read_bytes() == b"a" * 6000 + bytes(3 * BLOCK) + b"b" * 10
