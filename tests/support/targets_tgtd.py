"""Helpers for target tests: private tgtd ports, finding (and killing) one tgtd, images."""

from __future__ import annotations

import os
import random
import secrets
import signal
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import inspect, select
from sqlalchemy.orm import Session

from diskvault.config import Settings, load_settings
from diskvault.db import migrate
from diskvault.db.engine import get_engine
from diskvault.domains import optional_module
from diskvault.targets import service
from diskvault.targets.models import Target
from diskvault.tools.tgt import MAX_CONTROL_PORT, SOCKET_DIR
from support.server import free_port

MiB = 1024 * 1024
INITIATOR = "iqn.2024-01.com.example:pc-a"
OTHER_INITIATOR = "iqn.2024-01.com.example:pc-b"


free_tcp_port = free_port


def free_control_port() -> int:
    """A tgtd control port no other tgtd (the system one on 0, other tests) uses."""
    rng = random.SystemRandom()
    while True:
        port = rng.randrange(1000, MAX_CONTROL_PORT + 1)
        if not (SOCKET_DIR / f"socket.{port}").exists():
            return port


def unique_domain() -> str:
    """An IQN domain per test, so a reconciler only ever sees its own test's targets."""
    return f"io.diskvault.t{secrets.token_hex(4)}"


def tgtd_pid(control_port: int) -> int | None:
    """The pid of the tgtd serving ``control_port`` (found by its exact command line)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == b"tgtd" and b"-C" in argv:
            index = argv.index(b"-C")
            if index + 1 < len(argv) and argv[index + 1] == str(control_port).encode():
                return int(entry.name)
    return None


def kill_tgtd(control_port: int) -> int:
    """SIGKILL the tgtd on ``control_port`` and wait until it is gone; returns its pid."""
    pid = tgtd_pid(control_port)
    assert pid is not None, f"no tgtd runs with control port {control_port}"
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: tgtd_pid(control_port) != pid, what=f"tgtd {pid} to exit")
    return pid


def wait_until(check: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def write_known_image(path: Path, size: int = 4 * MiB, seed: int = 3720) -> bytes:
    """Seeded pseudo-random bytes, so any misplaced block shows in a comparison."""
    data = random.Random(seed).randbytes(size)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def target_settings(data_dir: Path, db_url: str, **overrides: object) -> Settings:
    """Migrated settings for in-process target tests, with a private IQN domain."""
    settings = load_settings(
        DATA_DIR=data_dir,
        DATABASE_URL=db_url,
        WORKERS=0,
        IQN_DOMAIN=unique_domain(),
        **overrides,
    )
    migrate.upgrade(settings.DATABASE_URL)
    return settings


def delete_all_targets(session: Session, settings: Settings) -> None:
    for target in session.scalars(select(Target)).all():
        service.delete_target(session, settings, target.id, force=True)


def images_table_ready(settings: Settings) -> bool:
    """The images domain has its model and migration (else image tests skip)."""
    if optional_module("diskvault.images.models") is None:
        return False
    return inspect(get_engine(settings.DATABASE_URL)).has_table("images")


def insert_image(
    session: Session, settings: Settings, *, status: str = "READY", fmt: str = "raw"
) -> tuple[str, bytes]:
    """An Image row with a known raw file in IMAGE_STORAGE_PATH, inserted directly.

    Used where the image pipeline itself is not under test: the row is exactly
    what an upload leaves behind once it is READY.
    """
    from diskvault.images.models import Image

    key = f"test/{secrets.token_hex(6)}.raw"
    data = write_known_image(settings.image_dir / key, seed=len(key))
    image = Image(name="known", status=status, format=fmt, storage_key=key, virtual_size=len(data))
    session.add(image)
    session.commit()
    return image.id, data
