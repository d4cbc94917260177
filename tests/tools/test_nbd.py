"""libnbd extent maps of a QSD NBD export that publishes a dirty bitmap."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from diskvault.tools import nbd
from diskvault.tools.process import ToolTimeout, run
from support.qsd_test import TestQsd

MiB = 1024 * 1024


@pytest.fixture
def export(tmp_path: Path) -> Iterator[str]:
    """A writable NBD export of a fresh 8 MiB qcow2 tracked by bitmap ``b0``."""
    image = tmp_path / "disk.qcow2"
    run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), str(8 * MiB)], timeout=30)
    with TestQsd(tmp_path / "qsd", name="nbd-test") as qsd:
        qsd.blockdev_add("disk", filename=image)
        qsd.bitmap_add("disk", "b0", persistent=False)
        sock = tmp_path / "nbd.sock"
        qsd.add_nbd_server(sock)
        qsd.add_nbd_export("e0", "disk", "vm1", writable=True, bitmaps=["b0"])
        yield nbd.unix_url(sock, "vm1")


def write(url: str, offset: int, length: int) -> None:
    run(["qemu-io", "-f", "raw", "-c", f"write -P 0x5a {offset} {length}", url], timeout=30)


def test_unix_url_quotes_export_and_socket() -> None:
    assert (
        nbd.unix_url(Path("/run/a b.sock"), "vm/1") == "nbd+unix:///vm%2F1?socket=/run/a%20b.sock"
    )


def test_dirty_extents_follow_writes(export: str) -> None:
    assert nbd.export_size(export) == 8 * MiB
    assert nbd.dirty_extents(export, "b0") == []
    write(export, MiB, 65536)
    write(export, 5 * MiB, 2 * 65536)
    dirty = [(e.offset, e.length) for e in nbd.dirty_extents(export, "b0")]
    assert dirty == [(MiB, 65536), (5 * MiB, 2 * 65536)]
    allocated = nbd.map_extents(export)
    assert sum(e.length for e in allocated) == 8 * MiB
    data = [(e.offset, e.length) for e in allocated if not e.type & 2]
    assert data == dirty


def test_an_unoffered_context_is_a_clear_error(export: str) -> None:
    with pytest.raises(nbd.NbdError, match="does not offer metadata context qemu:dirty-bitmap:no"):
        nbd.dirty_extents(export, "nope")


def test_a_server_that_never_speaks_times_out() -> None:
    """libnbd's own connect has no timeout; the module's deadline bounds it."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"nbd://127.0.0.1:{silent.getsockname()[1]}/x"
        with pytest.raises(ToolTimeout):
            nbd.export_size(url, timeout=0.5)
