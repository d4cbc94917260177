"""NBD servers and a stand-in "VM" (a qemu-storage-daemon with its own monitor)
for backup source tests."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from diskvault.tools import nbd
from support.qsd_test import TestQsd


@contextmanager
def qemu_nbd(
    image: Path,
    sock: Path,
    *,
    bitmap: str | None = None,
    export: str = "vm",
    tcp_port: int | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """``qemu-nbd`` serving ``image`` on a unix socket (or 127.0.0.1:``tcp_port``),
    several clients at once."""
    where = ["-b", "127.0.0.1", "-p", str(tcp_port)] if tcp_port else ["-k", str(sock)]
    cmd = ["qemu-nbd", "--persistent", "--shared=8", *where, "-f", "qcow2", "-x", export]
    if bitmap:
        cmd += ["--bitmap", bitmap]
    proc = subprocess.Popen([*cmd, str(image)], stderr=subprocess.PIPE)
    served = f"nbd://127.0.0.1:{tcp_port}/{export}" if tcp_port else url(sock, export)
    deadline = time.monotonic() + 10
    while True:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
        assert time.monotonic() < deadline, "qemu-nbd did not start"
        try:
            nbd.export_size(served, timeout=5)
            break
        except nbd.NbdError:
            time.sleep(0.02)
    try:
        yield proc
    finally:
        proc.terminate()  # qemu-nbd saves its persistent bitmaps on SIGTERM
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        sock.unlink(missing_ok=True)


def url(sock: Path, export: str = "vm") -> str:
    return nbd.unix_url(sock, export)


@contextmanager
def fake_vm(workdir: Path, disk: Path) -> Iterator[tuple[Path, str]]:
    """A QSD standing in for a running VM: monitor socket for diskvault, and an NBD
    export of its disk node so the test can write to the "guest" disk."""
    monitor = workdir / "vm-qmp.sock"
    extra = [
        "--chardev",
        f"socket,path={monitor},server=on,wait=off,id=vm",
        "--monitor",
        "chardev=vm",
    ]
    with TestQsd(workdir, name="vm", args=extra) as qsd:
        qsd.blockdev_add("drive0", "qcow2", filename=disk)
        qsd.add_nbd_server(workdir / "vm-nbd.sock")
        qsd.add_nbd_export("guest", "drive0", "guest", writable=True)
        yield monitor, nbd.unix_url(workdir / "vm-nbd.sock", "guest")
