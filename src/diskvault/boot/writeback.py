"""Per-machine writeback layers: a qcow2 overlay on the golden image, served as a raw file.

Each machine gets its own qemu-storage-daemon whose workdir is the machine's
folder under WRITEBACK_PATH, so one machine's full or crashed layer never
takes the others down and a crash is cleaned up per folder (by its pidfile).
The daemon exports the overlay writable through FUSE at ``disk.raw``, the
file the machine's iSCSI target serves. The golden image is only the
overlay's backing file, opened read-only, so no client write can reach it.

A second QMP monitor (``ctl.sock``) lets another process, such as a worker
applying the writeback, stop the daemon cleanly: ``quit`` flushes the overlay.
The daemon's sockets, pidfile and log live in a short runtime folder (unix
socket paths are limited to 108 bytes; WRITEBACK_PATH may be deeper).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from diskvault.boot.errors import WritebackError, WritebackFull
from diskvault.config import Settings
from diskvault.errors import DiskvaultError
from diskvault.tools import mount, qemu_img, qmp_block
from diskvault.tools.qsd import QsdError, QsdServer, kill_stale

log = structlog.get_logger("diskvault.boot")

OVERLAY = "overlay.qcow2"
DISK = "disk.raw"
CONTROL = "ctl.sock"
STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class LayerPaths:
    root: Path
    overlay: Path  # the qcow2 holding the machine's writes
    disk: Path  # the FUSE file: golden image plus writes, as a raw disk
    run: Path  # the daemon's workdir: QMP sockets, pidfile, log

    @property
    def control(self) -> Path:
        return self.run / CONTROL  # QMP monitor for other processes

    @property
    def pidfile(self) -> Path:
        return self.run / "qsd.pid"


def runtime_root() -> Path:
    """/run/diskvault-wb (cleared at reboot, like the daemons), else the temp folder."""
    run = Path("/run")
    base = run if os.access(run, os.W_OK) else Path(tempfile.gettempdir())
    return base / f"diskvault-wb-{os.getuid()}"


def run_dir(layer_root: Path) -> Path:
    """The runtime folder of the layer in ``layer_root``."""
    key = hashlib.sha256(str(layer_root.absolute()).encode()).hexdigest()[:20]
    return runtime_root() / key


def layer_paths(settings: Settings, machine_id: str) -> LayerPaths:
    root = settings.writeback_dir / machine_id
    return LayerPaths(root, root / OVERLAY, root / DISK, run_dir(root))


_lock = threading.Lock()
_daemons: dict[Path, QsdServer] = {}  # layer root -> the daemon this process started


def free_bytes(settings: Settings) -> int:
    st = os.statvfs(settings.writeback_dir)
    return st.f_bavail * st.f_frsize


def _failure(settings: Settings, machine_id: str, exc: Exception) -> WritebackError:
    text = exc.message if isinstance(exc, DiskvaultError) else str(exc)
    full = isinstance(exc, OSError) and exc.errno == errno.ENOSPC
    if full or "No space left" in text:
        return WritebackFull(
            path=str(settings.writeback_dir), free=free_bytes(settings), detail=text[-500:]
        )
    return WritebackError(machine=machine_id, detail=text[-1000:])


def _new_overlay(settings: Settings, paths: LayerPaths, base: Path, base_fmt: str) -> None:
    """Replace the overlay with an empty one on ``base``; the old one stays if this fails."""
    partial = paths.root / f"{OVERLAY}.partial"
    partial.unlink(missing_ok=True)
    try:
        qemu_img.create(
            partial,
            "qcow2",
            None,
            backing=base,
            backing_fmt=base_fmt,
            binary=settings.QEMU_IMG_PATH,
        )
        os.replace(partial, paths.overlay)
    finally:
        partial.unlink(missing_ok=True)


def start(
    settings: Settings, machine_id: str, base: Path, *, fresh: bool, base_fmt: str = "raw"
) -> Path:
    """(Re)start the layer and return the file to serve.

    ``fresh`` (or no overlay yet) makes a new empty overlay on ``base``
    (a raw image version, or a restore point's qcow2 chain for a recovery);
    otherwise the existing overlay, with its own backing file, is served again.
    """
    paths = layer_paths(settings, machine_id)
    stop(settings, machine_id)
    try:
        paths.root.mkdir(parents=True, exist_ok=True)
        paths.run.mkdir(parents=True, exist_ok=True, mode=0o700)
        if fresh or not paths.overlay.exists():
            _new_overlay(settings, paths, base, base_fmt)
        control = f"socket,path={str(paths.control).replace(',', ',,')},server=on,wait=off,id=ctl"
        daemon = QsdServer(
            paths.run,
            name=f"wb-{machine_id[:8]}",
            binary=settings.QEMU_STORAGE_DAEMON_PATH,
            args=["--chardev", control, "--monitor", "chardev=ctl"],
        )
        daemon.start()
        try:
            daemon.export_image_fuse(paths.overlay, "qcow2", paths.disk, writable=True)
        except BaseException:
            daemon.stop()
            raise
    except (OSError, DiskvaultError) as exc:
        shutil.rmtree(paths.run, ignore_errors=True)
        raise _failure(settings, machine_id, exc) from exc
    with _lock:
        _daemons[paths.root] = daemon
    return paths.disk


def running(settings: Settings, machine_id: str) -> bool:
    """The layer's daemon is up (started by this process or another one)."""
    paths = layer_paths(settings, machine_id)
    with _lock:
        daemon = _daemons.get(paths.root)
    if daemon is not None:
        return daemon.running
    return _pid(paths) is not None


def _pid(paths: LayerPaths) -> int | None:
    try:
        pid = int(paths.pidfile.read_text().strip())
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError):
        return None
    return pid if comm.startswith("qemu-storage") else None


def _quit_via_control(paths: LayerPaths) -> None:
    """Ask a daemon this process does not own to quit (it flushes first) and wait for it."""
    pid = _pid(paths)
    if pid is None:
        return
    with contextlib.suppress(QsdError):
        client = qmp_block.connect(paths.control, name="wb-ctl")
        with contextlib.suppress(QsdError):
            client.qmp("quit")
        client.close()
    deadline = time.monotonic() + STOP_TIMEOUT
    while _pid(paths) == pid and time.monotonic() < deadline:
        time.sleep(0.02)


def _unmount_dead(paths: LayerPaths) -> None:
    for m in mount.list_mounts():
        if m.mountpoint == paths.disk:
            with contextlib.suppress(mount.MountError):
                mount.umount(paths.disk)


def stop(settings: Settings, machine_id: str) -> None:
    """Stop the layer's daemon (flushing the overlay); the overlay file stays."""
    paths = layer_paths(settings, machine_id)
    with _lock:
        daemon = _daemons.pop(paths.root, None)
    if daemon is not None:
        daemon.stop()  # also fine when another process already made it quit
    else:
        _quit_via_control(paths)
        kill_stale(paths.run)  # it did not quit in time: the overlay may lose its last writes
        _unmount_dead(paths)
    shutil.rmtree(paths.run, ignore_errors=True)


def remove(settings: Settings, machine_id: str) -> None:
    stop(settings, machine_id)
    shutil.rmtree(layer_paths(settings, machine_id).root, ignore_errors=True)


def stop_all(settings: Settings) -> None:
    """Server shutdown: stop every layer this process started under WRITEBACK_PATH."""
    root = settings.writeback_dir
    with _lock:
        ours = [p for p in _daemons if p.parent == root]
    for layer in ours:
        stop(settings, layer.name)


def cleanup_stale(settings: Settings) -> int:
    """Start-up: kill daemons a crashed run left behind and unmount their dead FUSE files.

    Returns how many daemons were killed.
    """
    killed = 0
    root = settings.writeback_dir
    with _lock:
        ours = set(_daemons)
    for layer in sorted(p for p in root.iterdir() if p.is_dir() and p not in ours):
        paths = layer_paths(settings, layer.name)
        if kill_stale(paths.run):
            killed += 1
        shutil.rmtree(paths.run, ignore_errors=True)
        (layer / f"{OVERLAY}.partial").unlink(missing_ok=True)
    for m in mount.list_mounts(under=root):
        if m.mountpoint.name == DISK and m.mountpoint.parent not in ours:
            with contextlib.suppress(mount.MountError):
                mount.umount(m.mountpoint)
    if killed:
        log.warning("killed writeback daemons left by a crash", count=killed)
    return killed
