"""Issue 17 point 6 through the real CLI and server: refused images are listed with
their reason and cleaned up in one command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from subprocess import CompletedProcess

from diskvault.tools import qemu_img
from support import qemu_io
from support.images_util import upload, wait_image
from support.server import ServerProcess

BIN = str(Path(sys.executable).parent / "diskvault")
MiB = 1024 * 1024


def test_refused_images_show_why_and_go_in_one_command(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "srv") as server:
        _refused_images(server, tmp_path)
        _download_keeps_holes(server, tmp_path)


def _cli(server: ServerProcess, token: str, tmp: Path, *args: str) -> CompletedProcess[str]:
    env = {
        **os.environ,
        "DISKVAULT_URL": server.url,
        "DISKVAULT_TOKEN": token,
        "XDG_CONFIG_HOME": str(tmp),
        "COLUMNS": "250",
    }
    return subprocess.run([BIN, *args], env=env, capture_output=True, text=True, timeout=120)


def _download_keeps_holes(server: ServerProcess, tmp_path: Path) -> None:
    """A 64 MiB image holding 3 MiB downloads as about 3 MiB on disk, byte-identical."""
    token = server.login()
    src = tmp_path / "sparse.raw"
    qemu_img.create(src, "raw", 64 * MiB)
    for offset in (0, 30 * MiB, 61 * MiB):
        qemu_io.write_pattern(src, "raw", offset, MiB, 0x5A)
    with server.client(token) as api:
        image_id = upload(api, src).json()["id"]
        wait_image(api, image_id, {"READY"})
    out = tmp_path / "down.raw"
    got = _cli(server, token, tmp_path, "image", "download", image_id[:12], "-o", str(out))
    assert got.returncode == 0, got.stderr
    assert qemu_img.compare(src, out, "raw", "raw") and out.stat().st_size == 64 * MiB
    assert os.stat(out).st_blocks * 512 < 8 * MiB


def _refused_images(server: ServerProcess, tmp_path: Path) -> None:
    token = server.login()
    evil = tmp_path / "evil.qcow2"
    qemu_img.create(evil, "qcow2", None, backing="/etc/passwd", backing_fmt="raw")
    with server.client(token) as api:
        refused = [upload(api, evil, image_type="data").json()["image_id"] for _ in range(2)]
        for image_id in refused:
            wait_image(api, image_id, {"ERROR"})
        reason = api.get(f"/api/v1/images/{refused[0]}").json()["error"]
    assert reason
    env = {
        **os.environ,
        "DISKVAULT_URL": server.url,
        "DISKVAULT_TOKEN": token,
        "XDG_CONFIG_HOME": str(tmp_path),
        "COLUMNS": "250",
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([BIN, *args], env=env, capture_output=True, text=True, timeout=60)

    listed = cli("image", "list", "--status", "ERROR")
    assert listed.returncode == 0 and " ".join(reason.split())[:40] in " ".join(
        listed.stdout.split()
    )
    both = cli("image", "rm", refused[0], "--status", "error")
    assert both.returncode == 2
    gone = cli("image", "rm", "--status", "error")
    assert gone.returncode == 0 and "2 ERROR image(s) deleted" in gone.stdout, gone.stderr
    with server.client(token) as api:
        assert api.get("/api/v1/images", params={"status": "ERROR"}).json()["total"] == 0
