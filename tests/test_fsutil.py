"""Durable writes: short writes are looped, partial files never survive an error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from diskvault import fsutil


def test_pwrite_all_loops_on_short_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.pwrite
    calls = []

    def short(fd: int, data: memoryview, offset: int) -> int:
        calls.append(len(data))
        return real(fd, data[:3], offset)

    monkeypatch.setattr(fsutil.os, "pwrite", short)
    path = tmp_path / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        fsutil.pwrite_all(fd, memoryview(b"0123456789"), 5)
    finally:
        os.close(fd)
    assert path.read_bytes() == b"\0" * 5 + b"0123456789"
    assert len(calls) == 4


def test_atomic_file_publishes_only_complete_files(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "data.bin"
    fsutil.write_atomic(path, b"first")
    with pytest.raises(RuntimeError), fsutil.atomic_file(path) as fh:
        fh.write(b"half")
        raise RuntimeError("the writer died")
    assert path.read_bytes() == b"first"
    assert sorted(p.name for p in path.parent.iterdir()) == ["data.bin"]
    with pytest.raises(FileExistsError):
        fsutil.write_atomic(path, b"second", overwrite=False)
    assert sorted(p.name for p in path.parent.iterdir()) == ["data.bin"]
    fsutil.write_atomic(path, b"second")
    assert path.read_bytes() == b"second"


def test_fsync_dir_raises_and_callers_choose(tmp_path: Path) -> None:
    fsutil.fsync_dir(tmp_path)
    with pytest.raises(NotADirectoryError):
        fsutil.fsync_dir(Path(__file__))
