"""Helpers for diskless-boot tests: a private tgtd per app, golden images, clean-up."""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import random
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from diskvault.boot import writeback
from diskvault.config import Settings, load_settings
from diskvault.db.engine import session_scope
from diskvault.images.models import Image, ImageStatus
from diskvault.tools import mount
from diskvault.tools.qsd import kill_stale
from support.boot_sectors import DISK_SIZE, write_disk
from support.databases import pg_reachable, temporary_pg_database
from support.http import auth
from support.qemu_vm import QemuVM, pxe_args
from support.server import ADMIN_PASSWORD
from support.targets_tgtd import (
    free_control_port,
    free_tcp_port,
    kill_tgtd,
    tgtd_pid,
    unique_domain,
)

SECTOR = 512


def tgtd_env(control_port: int | None = None) -> dict[str, str]:
    """DISKVAULT_* settings for a server that manages its own private tgtd."""
    return {
        "DISKVAULT_TGT_MANAGE": "1",
        "DISKVAULT_TGT_CONTROL_PORT": str(control_port or free_control_port()),
        "DISKVAULT_ISCSI_PORTAL": f"127.0.0.1:{free_tcp_port()}",
        "DISKVAULT_IQN_DOMAIN": unique_domain(),
    }


def new_mac() -> str:
    """A random unicast MAC in QEMU's 52:54:00 range."""
    rng = random.SystemRandom()
    return "52:54:00:" + ":".join(f"{rng.randrange(256):02x}" for _ in range(3))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_sector(path: Path, lba: int) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(lba * SECTOR)
        return fh.read(SECTOR)


def write_sector(disk: Path, lba: int, data: bytes) -> None:
    """Write as a client would, straight into a machine's served disk file."""
    fd = os.open(disk, os.O_RDWR)
    try:
        os.pwrite(fd, data, lba * SECTOR)
        os.fsync(fd)
    finally:
        os.close(fd)


def insert_golden(settings: Settings, sector: bytes, *, status: str = "READY") -> tuple[str, Path]:
    """A READY raw image row whose file is a 16 MiB disk starting with ``sector``.

    Stands in for an upload where the image pipeline itself is not under test.
    """
    key = f"golden/{secrets.token_hex(6)}.raw"
    path = settings.image_dir / key
    path.parent.mkdir(parents=True, exist_ok=True)
    write_disk(path, sector)
    with session_scope(settings.DATABASE_URL) as session:
        image = Image(
            name=f"golden-{key[7:13]}",
            status=ImageStatus(status),
            format="raw",
            storage_key=key,
            virtual_size=DISK_SIZE,
        )
        session.add(image)
        session.flush()
        image_id = image.id
    return image_id, path


def set_image_status(session: Session, image_id: str, status: str) -> None:
    image = session.get(Image, image_id)
    assert image is not None
    image.status = ImageStatus(status)
    session.commit()


def cleanup_layers(writeback_dir: Path) -> None:
    """Kill writeback daemons and unmount their files, whatever state a test left."""
    if not writeback_dir.is_dir():
        return
    for layer in writeback_dir.iterdir():
        if layer.is_dir():
            kill_stale(writeback.run_dir(layer))
    for m in mount.list_mounts(under=writeback_dir):
        if not m.fstype.startswith("fuse"):
            continue
        with contextlib.suppress(mount.MountError):
            mount.umount(m.mountpoint)


MakeMachine = Callable[..., dict[str, Any]]


def _stop_tgtd(control_port: int) -> None:
    if tgtd_pid(control_port) is not None:
        kill_tgtd(control_port)


@dataclass
class BootApp:
    settings: Settings
    client: TestClient
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return auth(self.token)


@contextlib.contextmanager
def database(db: str) -> Iterator[str | None]:
    """A database URL for ``db`` ("sqlite" gives None: DATA_DIR's own), or skip."""
    if db == "sqlite":
        yield None
        return
    import pytest

    if not pg_reachable():
        pytest.skip("PostgreSQL not reachable")
    with temporary_pg_database() as url:
        yield url


@contextlib.contextmanager
def boot_app(data_dir: Path, db: str = "sqlite", **overrides: object) -> Iterator[BootApp]:
    """An in-process app with one job worker and a private managed tgtd."""
    from diskvault.api.app import create_app

    env = tgtd_env()
    port = int(env["DISKVAULT_TGT_CONTROL_PORT"])
    with database(db) as url:
        values: dict[str, object] = {
            "DATA_DIR": data_dir,
            "ADMIN_PASSWORD": ADMIN_PASSWORD,
            "WORKERS": 1,
            "TGT_MANAGE": True,
            "TGT_CONTROL_PORT": port,
            "ISCSI_PORTAL": env["DISKVAULT_ISCSI_PORTAL"],
            "IQN_DOMAIN": env["DISKVAULT_IQN_DOMAIN"],
            "BOOT_WRITEBACK_MIN_FREE_BYTES": 0,
            **overrides,
        }
        if url:
            values["DATABASE_URL"] = url
        settings = load_settings(**values)
        try:
            with TestClient(create_app(settings)) as client:
                resp = client.post(
                    "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
                )
                resp.raise_for_status()
                yield BootApp(settings, client, resp.json()["access_token"])
        finally:
            cleanup_layers(settings.writeback_dir)
            _stop_tgtd(port)
            # A scheduler thread of an app whose start-up failed may start it again later.
            atexit.register(_stop_tgtd, port)


def machine_factory(app: BootApp) -> MakeMachine:
    """``make(image_id, **fields)``: register a machine with a fresh name and MAC."""
    count = iter(range(10_000))

    def make(image_id: str, **fields: Any) -> dict[str, Any]:
        body = {"name": f"pc-{next(count)}", "mac": new_mac(), "image_id": image_id, **fields}
        resp = app.client.post("/api/v1/machines", json=body, headers=app.headers)
        assert resp.status_code == 201, resp.text
        machine: dict[str, Any] = resp.json()
        return machine

    return make


def write_tftp(directory: Path, api_port: int) -> Path:
    """A TFTP root whose boot.ipxe chains the server's boot script (10.0.2.2 is the host)."""
    directory.mkdir(parents=True, exist_ok=True)
    url = f"http://10.0.2.2:{api_port}/boot/ipxe?mac=${{net0/mac}}"
    (directory / "boot.ipxe").write_text(f"#!ipxe\ndhcp\nchain {url}\n")
    return directory


def pxe_vm(tftp: Path, mac: str, serial_log: Path) -> QemuVM:
    """A diskless QEMU machine (not started) that network-boots through ``tftp``."""
    return QemuVM(
        pxe_args(mac=mac, tftp_dir=tftp, bootfile="boot.ipxe", serial_log=serial_log),
        serial_log=serial_log,
    )
