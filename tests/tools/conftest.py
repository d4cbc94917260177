"""Images for the qemu-img and qemu-io tool tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from diskvault.tools import qemu_img
from support import qemu_io

MiB = 1024 * 1024


@pytest.fixture(scope="session")
def data_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 MiB raw image with a 256 KiB chunk of a distinct byte at the start of every MiB."""
    path = tmp_path_factory.mktemp("tools") / "data.raw"
    qemu_img.create(path, "raw", 16 * MiB)
    commands = [f"write -P {0x10 + i:#x} {i * MiB} {256 * 1024}" for i in range(16)]
    qemu_io.run(path, "raw", commands)
    return path


@pytest.fixture
def data_qcow2(data_raw: Path, tmp_path: Path) -> Path:
    """A fresh qcow2 copy of ``data_raw`` for tests that modify it."""
    path = tmp_path / "data.qcow2"
    qemu_img.convert(data_raw, "raw", path, "qcow2")
    return path
