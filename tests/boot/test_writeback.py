"""Writeback layers with a real qemu-storage-daemon: writes stay out of the golden image."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from diskvault.boot import writeback
from diskvault.boot.errors import WritebackError
from diskvault.config import Settings, load_settings
from diskvault.tools import mount, qemu_img
from support.boot_env import cleanup_layers, read_sector, sha256, write_sector
from support.boot_sectors import marker_sector, write_disk, writer_sector

ZERO = bytes(512)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = load_settings(DATA_DIR=tmp_path_factory.mktemp("wb"))
    yield settings
    cleanup_layers(settings.writeback_dir)


@pytest.fixture(scope="module")
def golden(settings: Settings) -> Path:
    return write_disk(settings.image_dir / "golden.raw", marker_sector())


def own_extents(overlay: Path) -> list[int]:
    return [e["start"] for e in qemu_img.map(overlay, "qcow2") if e["depth"] == 0 and e["data"]]


def test_writes_go_to_the_overlay_never_the_golden_image(settings: Settings, golden: Path) -> None:
    before = sha256(golden)
    disk = writeback.start(settings, "m-write", golden, fresh=True)
    assert writeback.running(settings, "m-write")
    assert read_sector(disk, 0) == marker_sector()
    write_sector(disk, 1, writer_sector())
    assert read_sector(disk, 1) == writer_sector()
    writeback.stop(settings, "m-write")
    assert not writeback.running(settings, "m-write")
    paths = writeback.layer_paths(settings, "m-write")
    assert own_extents(paths.overlay) == [0]
    assert read_sector(golden, 1) == ZERO
    assert sha256(golden) == before
    assert not any(m.mountpoint == disk for m in mount.list_mounts())


def test_keep_serves_the_writes_again_and_fresh_drops_them(
    settings: Settings, golden: Path
) -> None:
    disk = writeback.start(settings, "m-keep", golden, fresh=True)
    write_sector(disk, 7, writer_sector())
    disk = writeback.start(settings, "m-keep", golden, fresh=False)
    assert read_sector(disk, 7) == writer_sector()
    disk = writeback.start(settings, "m-keep", golden, fresh=True)
    assert read_sector(disk, 7) == ZERO
    writeback.remove(settings, "m-keep")
    assert not writeback.layer_paths(settings, "m-keep").root.exists()


def test_another_process_stops_the_daemon_cleanly_through_its_control_socket(
    settings: Settings, golden: Path
) -> None:
    disk = writeback.start(settings, "m-ctl", golden, fresh=True)
    write_sector(disk, 3, writer_sector())
    paths = writeback.layer_paths(settings, "m-ctl")
    pid = int(paths.pidfile.read_text())
    # As a worker process sees it: the daemon is not in its registry.
    daemon = writeback._daemons.pop(paths.root)
    writeback.stop(settings, "m-ctl")
    assert daemon._proc is not None and daemon._proc.wait(5) == 0  # quit, not killed
    assert not Path(f"/proc/{pid}").exists()
    assert 0 in own_extents(paths.overlay)  # flushed on quit
    daemon.stop()


def test_crashed_daemons_are_killed_and_their_mounts_cleared(
    settings: Settings, golden: Path
) -> None:
    writeback.start(settings, "m-crash", golden, fresh=True)
    writeback.start(settings, "m-dead", golden, fresh=True)
    crash = writeback.layer_paths(settings, "m-crash")
    dead = writeback.layer_paths(settings, "m-dead")
    # A server that died forgets its daemons; one of them died with it.
    forgotten = [writeback._daemons.pop(paths.root) for paths in (crash, dead)]
    os.kill(int(dead.pidfile.read_text()), signal.SIGKILL)
    assert forgotten[1]._proc is not None and forgotten[1]._proc.wait(5) == -signal.SIGKILL
    assert writeback.cleanup_stale(settings) == 1
    mounted = {m.mountpoint for m in mount.list_mounts(under=settings.writeback_dir)}
    assert crash.disk not in mounted and dead.disk not in mounted
    assert not writeback.running(settings, "m-crash")
    disk = writeback.start(settings, "m-crash", golden, fresh=False)
    assert read_sector(disk, 0) == marker_sector()
    writeback.stop(settings, "m-crash")
    for daemon in forgotten:
        daemon.stop()


def test_missing_base_is_a_clear_layer_error(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(WritebackError, match="m-missing"):
        writeback.start(settings, "m-missing", tmp_path / "nope.raw", fresh=True)
    assert not writeback.running(settings, "m-missing")
