"""qemu-storage-daemon (QSD) as a :class:`QsdServer`, driven over QMP.

QSD is the data plane for backups (``blockdev-backup`` with persistent dirty
bitmaps), file-level restore (a read-only FUSE export of a backup chain, put on
a loop device) and diskless boot (a writable FUSE export of a per-machine
overlay). The block-layer commands come from :class:`BlockClient`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from diskvault.tools import children, mount
from diskvault.tools.process import TERM_GRACE, ToolMissing
from diskvault.tools.qmp import QmpConnection, QsdError
from diskvault.tools.qmp_block import (
    BlockClient,
    QsdJobError,
    QsdJobTimeout,
    backup_action,
    bitmap_add_action,
    bitmap_clear_action,
)

QSD_BINARY = "qemu-storage-daemon"
START_TIMEOUT = 10.0
EXIT_WAIT = 2.0
STOP_TIMEOUT = 10.0

__all__ = [
    "FuseExport",
    "QsdError",
    "QsdJobError",
    "QsdJobTimeout",
    "QsdServer",
    "backup_action",
    "bitmap_add_action",
    "bitmap_clear_action",
    "kill_stale",
]


@dataclass(frozen=True)
class FuseExport:
    """A block node exported as a regular file at ``path``."""

    export_id: str
    node_name: str
    path: Path
    writable: bool


def kill_stale(workdir: Path) -> bool:
    """Kill a QSD left behind by a crashed run (found by its pidfile) and return
    True if one was running. Its FUSE mounts are for ``mount.list_mounts``."""
    pidfile = workdir / "qsd.pid"
    try:
        pid = int(pidfile.read_text().strip())
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError):
        return False
    if not comm.startswith("qemu-storage"):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    pidfile.unlink(missing_ok=True)
    return True


class QsdServer(BlockClient):
    """One qemu-storage-daemon with its QMP monitor on ``<workdir>/qmp.sock``."""

    def __init__(
        self,
        workdir: Path,
        *,
        name: str,
        binary: str = QSD_BINARY,
        args: list[str] | tuple[str, ...] = (),
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        super().__init__()
        self.workdir = Path(workdir)
        self.name = name
        self.binary = binary
        self.extra_args = [str(a) for a in args]
        self.start_timeout = start_timeout
        self.socket_path = self.workdir / "qmp.sock"
        self.pidfile = self.workdir / "qsd.pid"
        self.logfile = self.workdir / "qsd.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._fuse: dict[str, Path] = {}
        self._ids = itertools.count(1)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _log_tail(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def start(self) -> None:
        """Launch QSD and return once a QMP session is established."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        # The monitor socket is bound here and handed over, so connecting at once waits
        # in the backlog until QSD is up (a few ms): polling for the socket to appear
        # cost a whole sleep interval on every start.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
            try:
                listener.bind(str(self.socket_path))
                listener.listen(1)
            except OSError as exc:
                raise QsdError(action="start", stderr=f"{self.socket_path}: {exc}") from exc
            cmd = self._launch(listener.fileno())
        self._handshake(cmd)

    def _launch(self, monitor_fd: int) -> list[str]:
        cmd = [
            self.binary,
            "--chardev",
            f"socket,fd={monitor_fd},server=on,wait=off,id=qmp0",
            "--monitor",
            "chardev=qmp0",
            "--pidfile",
            str(self.pidfile),
            *self.extra_args,
        ]
        # Output goes to a file: a pipe nobody drains would block QSD. SIGTERM when
        # we die, not SIGKILL: QSD then closes its images and writes their bitmaps.
        with open(self.logfile, "ab") as log:
            try:
                self._proc = children.popen(
                    cmd,
                    deathsig=signal.SIGTERM,
                    quit_qmp=self.socket_path,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    pass_fds=(monitor_fd,),
                )
            except FileNotFoundError as exc:
                raise ToolMissing(cmd=cmd, path=self.binary) from exc
        return cmd

    def _handshake(self, cmd: list[str]) -> None:
        assert self._proc is not None
        conn = QmpConnection(self.socket_path, name=self.name)
        try:
            conn.connect(self.start_timeout)
        except QsdError as exc:
            conn.close()
            try:
                # A QSD that refused its options hangs up the connection as it exits.
                self._proc.wait(EXIT_WAIT)
            except subprocess.TimeoutExpired:
                self.stop()
                raise QsdError(
                    action="start", cmd=cmd, stderr=f"QMP not ready: {exc.stderr}"
                ) from exc
            self._proc = None
            self.socket_path.unlink(missing_ok=True)
            raise QsdError(action="start", cmd=cmd, stderr=self._log_tail() or "exited") from exc
        self._qmp = conn

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """``quit`` over QMP, then SIGTERM, then SIGKILL; unmount stale FUSE exports."""
        proc, conn = self._proc, self._qmp
        self._proc, self._qmp = None, None
        if conn is not None:
            with contextlib.suppress(QsdError):
                conn.execute("quit", timeout=2.0)
            conn.close()
        if proc is not None:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                for sig, grace in ((signal.SIGTERM, TERM_GRACE), (signal.SIGKILL, None)):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, sig)
                    try:
                        proc.wait(grace)
                        break
                    except subprocess.TimeoutExpired:
                        continue
            children.forget(proc.pid)
        # A killed QSD leaves "transport endpoint is not connected" mounts.
        mounted = {m.mountpoint for m in mount.list_mounts()}
        for path in self._fuse.values():
            if path in mounted:
                with contextlib.suppress(mount.MountError):
                    mount.umount(path)
        self._fuse.clear()
        self.socket_path.unlink(missing_ok=True)
        self.pidfile.unlink(missing_ok=True)

    # Closing the client of a daemon we own means stopping the daemon.
    close = stop

    def __enter__(self) -> Self:
        self.start()
        return self

    # -- FUSE exports ----------------------------------------------------------

    def add_fuse_export(
        self,
        export_id: str,
        node_name: str,
        mountpoint: Path,
        *,
        writable: bool = False,
        allow_other: bool = False,
    ) -> FuseExport:
        """Mount ``node_name`` over the regular file ``mountpoint`` (created if missing)."""
        mountpoint = Path(mountpoint)
        if mountpoint.is_dir():
            raise QsdError(action="fuse export", stderr=f"{mountpoint} is a directory, not a file")
        mountpoint.touch(exist_ok=True)
        args = {
            "type": "fuse",
            "id": export_id,
            "node-name": node_name,
            "mountpoint": str(mountpoint),
            "writable": writable,
            "allow-other": "on" if allow_other else "off",
        }
        self.qmp("block-export-add", args)
        self._fuse[export_id] = mountpoint
        return FuseExport(export_id, node_name, mountpoint, writable)

    def export_del(self, export_id: str, *, timeout: float = 10.0) -> None:
        super().export_del(export_id, timeout=timeout)
        self._fuse.pop(export_id, None)

    def export_image_fuse(
        self, image_path: Path, fmt: str, mountpoint: Path, *, writable: bool = False
    ) -> FuseExport:
        """Expose an image (with its whole backing chain) as a raw file."""
        node = f"img{next(self._ids)}"
        self.blockdev_add(node, fmt, filename=image_path, read_only=not writable)
        try:
            return self.add_fuse_export(f"{node}-fuse", node, mountpoint, writable=writable)
        except QsdError:
            self.blockdev_del(node)
            raise
