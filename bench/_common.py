"""Small helpers shared by the bench scripts: timing, running tools, tables.

Bench scripts print one table each, with times and ratios against a reference
tool measured in the same run; absolute figures on shared machines are noisy,
ratios within one run are what the goals are stated in.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, TypeVar

T = TypeVar("T")


@dataclass
class Timer:
    seconds: float = 0.0


@contextmanager
def timer() -> Iterator[Timer]:
    """``with timer() as t: ...`` then read ``t.seconds``."""
    t = Timer()
    start = time.perf_counter()
    try:
        yield t
    finally:
        t.seconds = time.perf_counter() - start


def timed(fn: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T, float]:
    with timer() as t:
        result = fn(*args, **kwargs)
    return result, t.seconds


def run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    timeout: float = 3600.0,
    check: bool = True,
    capture: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command (argument list, never a shell) with a timeout; echo it to stderr."""
    argv = [os.fspath(c) for c in cmd]
    print("+ " + " ".join(argv), file=sys.stderr, flush=True)
    return subprocess.run(argv, capture_output=capture, text=True, timeout=timeout, check=check)


def drop_caches() -> None:
    """Empty the page, dentry and inode caches so the next run reads from disk (root only)."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def evict(*paths: Path) -> None:
    """Drop these files' pages from the page cache, so the next run reads them from disk.

    Unlike :func:`drop_caches`, programs and libraries stay cached, as they are on
    a machine that runs them every day: the run measures the data path, not how
    long an interpreter takes to load from a cold disk.
    """
    os.sync()
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def ratio(numerator: float, denominator: float) -> str:
    """``"2.31x"``; how many times faster the denominator's tool was."""
    return f"{numerator / denominator:.2f}x" if denominator > 0 else "n/a"


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


@dataclass
class Table:
    """Rows of cells printed as an aligned text table; floats as seconds."""

    columns: Sequence[str]
    title: str = ""
    rows: list[list[str]] = field(default_factory=list)

    def add(self, *cells: object) -> Table:
        if len(cells) != len(self.columns):
            raise ValueError(f"row has {len(cells)} cells, table has {len(self.columns)} columns")
        self.rows.append([f"{c:.3f}" if isinstance(c, float) else str(c) for c in cells])
        return self

    def print(self, file: TextIO = sys.stdout) -> None:
        widths = [
            max(len(str(c)), *(len(r[i]) for r in self.rows)) for i, c in enumerate(self.columns)
        ]

        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

        if self.title:
            print(self.title, file=file)
        print(line(self.columns), file=file)
        print("|" + "|".join("-" * (w + 2) for w in widths) + "|", file=file)
        for row in self.rows:
            print(line(row), file=file)
        file.flush()
