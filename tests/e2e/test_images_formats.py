"""Every supported format through a real server, hostile images stopped, and the CLI."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from diskvault.tools import qemu_img
from support.http import assert_problem
from support.images_util import (
    ReadSentinel,
    expected_raw,
    patterned,
    reference_digest,
    temp_leftovers,
    upload,
    wait_image,
)
from support.server import BIN, ServerProcess

FORMATS = {
    "vhdx": ("vhdx", {}),
    "vmdk-sparse": ("vmdk", {}),
    "vmdk-stream": ("vmdk", {"subformat": "streamOptimized"}),
    "qcow2": ("qcow2", {}),
    "vdi": ("vdi", {}),
    "vpc": ("vpc", {}),
    "raw": ("raw", {}),
}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("images"))
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def client(srv: ServerProcess) -> Iterator[httpx.Client]:
    with srv.client(srv.login()) as c:
        yield c


@pytest.mark.parametrize("name", FORMATS)
def test_format_converts_to_the_exact_raw_content(
    name: str, client: httpx.Client, srv: ServerProcess, tmp_path: Path
) -> None:
    fmt, options = FORMATS[name]
    src = patterned(tmp_path / f"disk.{fmt}", fmt, options)
    resp = upload(client, src)
    assert resp.status_code == 202, resp.text
    image = wait_image(client, resp.json()["id"], {"READY", "ERROR"})
    assert image["status"] == "READY", image
    assert image["format"] == "raw"
    assert image["details"]["inspection"] is not None
    # vpc sizes are CHS-rounded; everything past the pattern must read as zeros
    expected = expected_raw(tmp_path / "expected.raw", image["virtual_size"]).read_bytes()
    got = client.get(f"/api/v1/images/{image['id']}/download")
    assert got.status_code == 200 and got.content == expected
    assert temp_leftovers(srv.data_dir, image["id"]) == []


def _with_target(make: Callable[[Path, str], None]) -> Callable[[Path, str], Path]:
    def build(tmp: Path, target: str) -> Path:
        out = tmp / "evil"
        make(out, target)
        return out

    return build


def _backing(path: Path, target: str) -> None:
    qemu_img.create(path, "qcow2", None, backing=target, backing_fmt="raw")


def _data_file(path: Path, target: str) -> None:
    qemu_img.create(path, "qcow2", 16 * 1024 * 1024, options={"data_file": target})


def _vmdk_descriptor(path: Path, target: str) -> None:
    path.write_text(
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        f'createType="monolithicFlat"\nRW 2048 FLAT "{target}" 0\n'
    )


def _polyglot(path: Path, target: str) -> None:
    qemu_img.create(path, "qcow2", 16 * 1024 * 1024)
    with open(path, "r+b") as fh:
        fh.seek(0x8000)
        fh.write(b"\x01CD001\x01")


def _huge(path: Path, target: str) -> None:
    qemu_img.create(path, "qcow2", 8 * 1024**4)


# name: (builder, declared format, reason, literal target or None)
MALICIOUS: dict[str, tuple[Callable[[Path, str], Path], str | None, str, str | None]] = {
    "qcow2-backing-file": (_with_target(_backing), None, "backing-file", "/etc/passwd"),
    "qcow2-data-file": (_with_target(_data_file), None, "external-data-file", None),
    "vmdk-descriptor-extent": (
        _with_target(_vmdk_descriptor),
        None,
        "vmdk-external-extent",
        "/etc/shadow",
    ),
    "raw-that-is-qcow2": (_with_target(_backing), "raw", "format-mismatch", None),
    "polyglot": (_with_target(_polyglot), None, "polyglot", None),
    "huge-virtual-size": (_with_target(_huge), None, "virtual-size-too-large", None),
}


def _rejected(
    client: httpx.Client, srv: ServerProcess, path: Path, fmt: str | None, reason: str
) -> dict[str, Any]:
    fields = {"format": fmt} if fmt else {}
    body = assert_problem(upload(client, path, **fields), 422)
    assert body["reason"] == reason, body
    image = client.get(f"/api/v1/images/{body['image_id']}").json()
    assert image["status"] == "ERROR" and image["error"]
    assert temp_leftovers(srv.data_dir, image["id"]) == []
    assert not (srv.data_dir / "images" / image["id"]).exists()
    return body


@pytest.mark.parametrize("name", MALICIOUS)
def test_malicious_upload_is_422_reads_nothing_outside_and_is_deleted(
    name: str, client: httpx.Client, srv: ServerProcess, tmp_path: Path
) -> None:
    build, fmt, reason, literal = MALICIOUS[name]
    if literal is not None:
        (tmp_path / "lit").mkdir()
        body = _rejected(client, srv, build(tmp_path / "lit", literal), fmt, reason)
        assert literal in body["detail"]
    # The same attack aimed at a FIFO: any open() of it for reading would be seen.
    sentinel_dir = tmp_path / "s"
    sentinel_dir.mkdir()
    target = sentinel_dir / "target"
    target.write_bytes(b"\0" * 512)
    evil = build(sentinel_dir, str(target))
    target.unlink()
    with ReadSentinel(target) as sentinel:
        _rejected(client, srv, evil, fmt, reason)
    assert not sentinel.touched


def _cli(srv: ServerProcess, token: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DISKVAULT_URL": srv.url,
        "DISKVAULT_TOKEN": token,
        "XDG_CONFIG_HOME": str(cwd),
        "COLUMNS": "200",
    }
    return subprocess.run(
        [str(BIN), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_cli_upload_download_and_remove(
    client: httpx.Client, srv: ServerProcess, tmp_path: Path
) -> None:
    token = client.headers["authorization"].split()[1]
    src = patterned(tmp_path / "cli.vhdx", "vhdx")
    up = _cli(srv, token, "image", "upload", str(src), "--name", "cli disk", "--wait", cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    image_id = up.stdout.split("image ", 1)[1].split()[0]
    image = client.get(f"/api/v1/images/{image_id}").json()
    assert image["status"] == "READY" and image["name"] == "cli disk"
    assert image["details"]["client_checksum"] == "sha256-extents-v1"  # the CLI sent it
    assert image["source_digest"] == reference_digest(src.read_bytes())
    listed = _cli(srv, token, "image", "list", "--status", "READY", cwd=tmp_path)
    assert listed.returncode == 0 and image_id[:8] in listed.stdout  # shortest unique, 8+
    out = tmp_path / "cli.raw"
    down = _cli(srv, token, "image", "download", image_id[:10], "-o", str(out), cwd=tmp_path)
    assert down.returncode == 0, down.stderr
    assert out.read_bytes() == expected_raw(tmp_path / "e.raw").read_bytes()
    conv = _cli(srv, token, "image", "convert", image_id, "--to", "qcow2", "--wait", cwd=tmp_path)
    assert conv.returncode == 0, conv.stderr
    assert client.get(f"/api/v1/images/{image_id}").json()["format"] == "qcow2"
    assert _cli(srv, token, "image", "rm", image_id, cwd=tmp_path).returncode == 0
    missing = _cli(srv, token, "image", "show", image_id, cwd=tmp_path)
    assert missing.returncode == 4 and "was not found" in missing.stderr
    evil = tmp_path / "evil.qcow2"
    _backing(evil, "/etc/passwd")
    bad = _cli(srv, token, "image", "upload", str(evil), cwd=tmp_path)
    assert bad.returncode == 2 and "backing" in bad.stderr


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def test_upload_streams_in_constant_memory(
    client: httpx.Client, srv: ServerProcess, tmp_path: Path
) -> None:
    big = tmp_path / "big.raw"
    block = b"\x01" * (1024 * 1024)
    with open(big, "wb") as fh:
        for _ in range(256):
            fh.write(block)
    assert srv.proc is not None
    before = _status_kib(srv.proc.pid, "VmRSS")
    resp = upload(client, big)
    peak = _status_kib(srv.proc.pid, "VmHWM")
    assert resp.status_code == 202, resp.text
    # 256 MiB went through; buffering it would show as >= 256 MiB of growth
    assert peak - before < 64 * 1024, f"RSS grew from {before} KiB to a peak of {peak} KiB"
    image = wait_image(client, resp.json()["id"], {"READY", "ERROR"})
    assert image["status"] == "READY" and image["file_size"] == 256 * 1024 * 1024
