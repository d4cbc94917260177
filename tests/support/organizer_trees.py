"""Helpers for organizer tests: messy trees with real images, and operation calls."""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import os
import subprocess
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx

MiB = 1024 * 1024


def put(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True, timeout=60)


def iso_bytes(size: int = 64 * 1024) -> bytes:
    """An ISO 9660 primary volume descriptor at 32 KiB: enough for any inspector."""
    data = bytearray(size)
    data[0x8000:0x8006] = b"\x01CD001"
    data[0x8000 + 40 : 0x8000 + 48] = b"TESTDISC"
    return bytes(data)


def mbr_disk(size: int = 1 * MiB) -> bytes:
    data = bytearray(size)
    data[446 + 4] = 0x83  # one Linux partition
    data[446 + 8 : 446 + 12] = (2048).to_bytes(4, "little")
    data[446 + 12 : 446 + 16] = (100).to_bytes(4, "little")
    data[510:512] = b"\x55\xaa"
    return bytes(data)


def tar_bytes() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    return buf.getvalue()


def zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("hello.txt", "hello")
    return buf.getvalue()


def build_messy_tree(root: Path) -> dict[str, str]:
    """A share as people leave them; returns key -> expected category."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "vms").mkdir(exist_ok=True)
    qemu_img("create", "-q", "-f", "qcow2", str(root / "vms" / "web.qcow2"), "64M")
    qemu_img("create", "-q", "-f", "vmdk", str(root / "old-disk.dat"), "32M")  # misleading name
    put(root / "isos" / "install.iso", iso_bytes())
    put(root / "disk.img", mbr_disk())
    put(root / "notes.txt", b"remember the milk\n" * 10)
    put(root / "backup.tar.gz", gzip.compress(tar_bytes()))
    put(root / "logs.xz", lzma.compress(b"log line\n" * 100))
    put(root / "bundle.zip", zip_bytes())
    put(root / "plain.tar", tar_bytes())
    put(root / "copies" / "notes-copy.txt", b"remember the milk\n" * 10)
    return {
        "vms/web.qcow2": "disk-image",
        "old-disk.dat": "disk-image",
        "isos/install.iso": "iso",
        "disk.img": "disk-image",
        "notes.txt": "other",
        "backup.tar.gz": "archive",
        "logs.xz": "archive",
        "bundle.zip": "archive",
        "plain.tar": "archive",
        "copies/notes-copy.txt": "other",
    }


def snapshot(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every regular file (symlinks and dirs left out)."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def start_op(client: httpx.Client, **body: Any) -> dict[str, Any]:
    resp = client.post("/api/v1/operations", json=body)
    assert resp.status_code == 202, resp.text
    op: dict[str, Any] = resp.json()
    return op


def wait_op(client: httpx.Client, op_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    op: dict[str, Any] = {}
    while time.monotonic() < deadline:
        op = client.get(f"/api/v1/operations/{op_id}").json()
        if op["status"] in ("succeeded", "failed", "cancelled"):
            return op
        time.sleep(0.1)
    raise AssertionError(f"operation {op_id} did not finish: {op}")


def run_op(client: httpx.Client, **body: Any) -> dict[str, Any]:
    op = wait_op(client, start_op(client, **body)["id"])
    assert op["status"] == "succeeded", op
    return op


def items(client: httpx.Client, op_id: str) -> list[dict[str, Any]]:
    page = client.get(f"/api/v1/operations/{op_id}/items", params={"limit": 1000}).json()
    result: list[dict[str, Any]] = page["items"]
    return result
