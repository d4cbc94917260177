"""A real ``diskvault serve`` (private tgtd, an organizer root) and Debian's Chromium."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.boot_env import tgtd_env
from support.console import CHROMIUM, Console
from support.server import ServerProcess
from support.targets_tgtd import kill_tgtd, tgtd_pid


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    root = tmp_path_factory.mktemp("console")
    organizer_root = root / "library"
    organizer_root.mkdir()
    env = tgtd_env()
    env["DISKVAULT_ORGANIZER_ROOTS"] = f'["{organizer_root}"]'
    env["DISKVAULT_BOOT_WRITEBACK_MIN_FREE_BYTES"] = "0"
    server = ServerProcess(root / "data", env=env).start()
    shots = Path(os.environ.get("DISKVAULT_SCREENSHOTS") or root / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    try:
        yield Console(server, root, shots, organizer_root)
    finally:
        server.stop()
        port = int(env["DISKVAULT_TGT_CONTROL_PORT"])
        if tgtd_pid(port) is not None:  # the server starts it only when a target needs it
            kill_tgtd(port)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install-system-deps")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()
