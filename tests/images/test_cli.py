"""``diskvault image info`` and ``convert --local``: no server, same inspection."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from diskvault.cli.images import parse_size
from diskvault.errors import BadRequest
from diskvault.tools import qemu_img
from support.images_util import expected_raw, patterned
from support.server import BIN


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DISKVAULT_URL": "http://127.0.0.1:9",  # nothing listens: these must not need a server
        "DISKVAULT_TOKEN": "dvt_unused",
        "DISKVAULT_DATA_DIR": str(cwd / "nowhere"),
        "COLUMNS": "200",
    }
    return subprocess.run(
        [str(BIN), "image", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_info_local(tmp_path: Path) -> None:
    src = patterned(tmp_path / "disk.vhdx", "vhdx")
    out = run("info", str(src), "--local", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "vhdx" in out.stdout and "8388608" in out.stdout and "safe to import" in out.stdout
    assert not (tmp_path / "nowhere").exists()


def test_convert_local_with_the_same_inspection(tmp_path: Path) -> None:
    src = patterned(tmp_path / "disk.vmdk", "vmdk")
    dst = tmp_path / "disk.raw"
    out = run("convert", str(src), str(dst), "--to", "raw", "--local", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert dst.read_bytes() == expected_raw(tmp_path / "expected.raw").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk.raw", "disk.vmdk", "expected.raw"]
    fast = run(
        "convert",
        str(src),
        str(tmp_path / "f.raw"),
        "--to",
        "raw",
        "--local",
        "--no-sync",
        cwd=tmp_path,
    )
    assert fast.returncode == 0, fast.stderr
    assert (tmp_path / "f.raw").read_bytes() == dst.read_bytes()
    (tmp_path / "f.raw").unlink()
    # issue 17: a DST path implies --local (the URL above has no server)
    implied = run("convert", str(src), "implied.raw", "--to", "raw", cwd=tmp_path)
    assert implied.returncode == 0, implied.stderr
    assert (tmp_path / "implied.raw").read_bytes() == dst.read_bytes()
    (tmp_path / "implied.raw").unlink()

    evil = tmp_path / "evil.qcow2"
    qemu_img.create(evil, "qcow2", None, backing="/etc/passwd", backing_fmt="raw")
    bad = run("convert", str(evil), str(tmp_path / "x.raw"), "--to", "raw", "--local", cwd=tmp_path)
    assert bad.returncode == 2 and "backing" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "x.raw").exists()
    info = run("info", str(evil), "--local", cwd=tmp_path)
    assert info.returncode == 2 and "/etc/passwd" in info.stderr


@pytest.mark.parametrize(
    ("text", "size"),
    [("512", 512), ("20G", 20 << 30), ("512MiB", 512 << 20), ("1t", 1 << 40), ("4 KiB", 4096)],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_parse_size_rejects_nonsense() -> None:
    with pytest.raises(BadRequest):
        parse_size("big")
