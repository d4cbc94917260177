"""qemu-system-x86_64 machines for tests and benchmarks: PXE-booting diskless PCs.

Used by the diskless-boot tests and ``bench/boot.py`` to prove a machine boots
end to end: QEMU's user network gives the guest DHCP and TFTP, and maps the
guest's 10.0.2.2 to the host's 127.0.0.1, so no traffic leaves loopback.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import TracebackType

from diskvault.tools.process import Process
from diskvault.tools.qemu_system import DEFAULT_BINARY, QemuError


def pxe_args(
    *, mac: str, tftp_dir: Path, bootfile: str, serial_log: Path, memory_mb: int = 128
) -> list[str]:
    """Arguments for a diskless machine that network-boots through iPXE.

    TCG, not KVM: iPXE was seen to hang under ``-accel kvm`` on these hosts.
    """
    return [
        "-accel", "tcg",
        "-m", str(memory_mb),
        "-display", "none",
        "-serial", f"file:{serial_log}",
        "-netdev", f"user,id=n0,tftp={tftp_dir},bootfile={bootfile}",
        "-device", f"virtio-net-pci,netdev=n0,mac={mac}",
        "-boot", "n",
        "-no-user-config",
    ]  # fmt: skip


class QemuVM:
    """A VM process: ``start()`` returns once QEMU runs; ``stop()`` kills it."""

    def __init__(self, args: list[str], *, serial_log: Path, binary: str = DEFAULT_BINARY):
        self.args = args
        self.serial_log = serial_log
        self.binary = binary
        self._process: Process | None = None

    def start(self) -> QemuVM:
        self.serial_log.unlink(missing_ok=True)
        self._process = Process([self.binary, *self.args], error=QemuError)
        self._process.start()
        time.sleep(0.1)
        if not self.running:
            raise QemuError("QEMU exited at start", cmd=self._process.cmd, stderr=self.stderr)
        return self

    @property
    def running(self) -> bool:
        proc = self._process.proc if self._process else None
        return proc is not None and proc.poll() is None

    @property
    def stderr(self) -> str:
        return self._process.stderr if self._process else ""

    def serial(self) -> bytes:
        try:
            return self.serial_log.read_bytes()
        except FileNotFoundError:
            return b""

    def wait_for_serial(self, marker: bytes, timeout: float = 120.0) -> float:
        """Seconds until ``marker`` appears on the serial port; raises on timeout."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if marker in self.serial():
                return time.monotonic() - started
            if not self.running:
                raise QemuError(
                    f"QEMU exited before printing {marker!r}", cmd=[self.binary], stderr=self.stderr
                )
            time.sleep(0.1)
        raise QemuError(
            f"{marker!r} not seen on the serial port within {timeout:.0f}s",
            cmd=[self.binary],
            stderr=self.serial()[-500:].decode(errors="replace"),
        )

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()

    def __enter__(self) -> QemuVM:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
