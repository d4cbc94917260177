"""Conversions that are cancelled, run out of disk, or lose their worker, on real servers."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from diskvault.tools import qemu_img
from support import qemu_io
from support.http import assert_problem
from support.images_util import MiB, temp_leftovers, upload, wait_image, wait_job_progress
from support.jobs import wait_for
from support.server import ServerProcess

# qemu-img convert -r: the 6 MiB of data below take about 5 s to convert.
SLOW = {"DISKVAULT_IMAGE_CONVERT_RATE_LIMIT": str(MiB), "DISKVAULT_JOB_HEARTBEAT_S": "0.5"}


def data_image(path: Path, data: int) -> Path:
    qemu_img.create(path, "qcow2", 32 * MiB)
    qemu_io.write_pattern(path, "qcow2", 0, data, 0x5A)
    return path


def stored_file(srv: ServerProcess, image: dict[str, Any]) -> Path:
    files = list((srv.data_dir / "images" / image["id"]).iterdir())
    assert len(files) == 1, files
    return files[0]


def _mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {result.stderr.decode().strip()}")


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("slow"), env=SLOW)
    proc.start()
    yield proc
    proc.stop()


def test_cancel_mid_conversion_keeps_the_source_and_no_partial(
    slow: ServerProcess, tmp_path: Path
) -> None:
    src = data_image(tmp_path / "big.qcow2", 6 * MiB)
    with slow.client(slow.login()) as client:
        resp = upload(client, src)
        assert resp.status_code == 202, resp.text
        image_id, job_id = resp.json()["id"], resp.json()["job_id"]
        wait_image(client, image_id, {"CONVERTING"})
        job = wait_job_progress(client, job_id)
        status = client.get(f"/api/v1/images/{image_id}/conversion-status").json()
        assert status["status"] == "CONVERTING" and status["percent"] > 0
        assert status["rate_bytes_per_s"] is not None or job["percent"] > 0
        client.post(f"/api/v1/jobs/{job_id}/cancel").raise_for_status()
        assert (
            wait_for(client, job_id, {"cancelled", "failed", "succeeded"})["status"] == "cancelled"
        )
        image = client.get(f"/api/v1/images/{image_id}").json()
        assert image["status"] == "ERROR" and "cancelled" in image["error"]
        assert image["format"] == "qcow2"
        kept = stored_file(slow, image)
        assert hashlib.sha256(kept.read_bytes()).hexdigest() == image["source_sha256"]
        assert temp_leftovers(slow.data_dir, image_id) == []
        # the kept source converts on request
        retry = client.post(f"/api/v1/images/{image_id}/convert", json={"target_format": "raw"})
        assert retry.status_code == 202, retry.text
        done = wait_image(client, image_id, {"READY", "ERROR"})
    assert done["status"] == "READY" and done["format"] == "raw" and done["error"] is None
    assert not kept.exists() and stored_file(slow, done).suffix == ".raw"


def test_worker_killed_mid_conversion_leaves_error_and_intact_source(
    tmp_path: Path,
) -> None:
    srv = ServerProcess(tmp_path / "srv", env=SLOW)
    src = data_image(tmp_path / "big.qcow2", 6 * MiB)
    try:
        srv.start()
        with srv.client(srv.login()) as client:
            resp = upload(client, src)
            image_id, job_id = resp.json()["id"], resp.json()["job_id"]
            wait_job_progress(client, job_id)
        srv.kill()
        srv.start()  # recovery reaps what the dead process was running
        with srv.client(srv.login()) as client:
            image = wait_image(client, image_id, {"ERROR", "READY"})
            job = client.get(f"/api/v1/jobs/{job_id}").json()
    finally:
        srv.stop()
    assert job["status"] == "failed"
    assert image["status"] == "ERROR" and "stopped responding" in image["error"]
    assert "source is kept" in image["error"]
    kept = stored_file(srv, image)
    assert hashlib.sha256(kept.read_bytes()).hexdigest() == image["source_sha256"]
    assert qemu_img.compare(kept, src, "qcow2", "qcow2")
    assert temp_leftovers(srv.data_dir, image_id) == []


def test_full_temp_disk_gives_clear_errors_and_consistent_state(tmp_path: Path) -> None:
    temp = tmp_path / "small-temp"
    _mount_tmpfs(temp, "8m")
    srv = ServerProcess(tmp_path / "srv", env={"DISKVAULT_TEMP_STORAGE_PATH": str(temp)})
    try:
        srv.start()
        with srv.client(srv.login()) as client:
            _full_disk_cases(client, srv, tmp_path)
    finally:
        srv.stop()
        subprocess.run(["umount", str(temp)], timeout=30, check=True)


def _full_disk_cases(client: httpx.Client, srv: ServerProcess, tmp_path: Path) -> None:
    big = tmp_path / "big.raw"
    big.write_bytes(os.urandom(12 * MiB))
    # a declared length that cannot fit is refused before a byte is stored
    body = assert_problem(upload(client, big), 507)
    assert "free" in body["detail"]

    # a chunked upload (no length) runs out of space mid-stream
    def chunks() -> Iterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.raw"\r\n\r\n'
        with open(big, "rb") as fh:
            while chunk := fh.read(MiB):
                yield chunk
        yield b"\r\n--b--\r\n"

    resp = client.post(
        "/api/v1/images/upload",
        content=chunks(),
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert_problem(resp, 507)
    failed = client.get("/api/v1/images", params={"status": "ERROR"}).json()["items"]
    assert len(failed) == 1 and "no space left" in failed[0]["error"]
    assert list((tmp_path / "small-temp").iterdir()) == []

    # the upload fits, but its conversion would not: the job fails before writing
    src = data_image(tmp_path / "data.qcow2", 5 * MiB)
    resp = upload(client, src)
    assert resp.status_code == 202, resp.text
    image = wait_image(client, resp.json()["id"], {"READY", "ERROR"})
    assert image["status"] == "ERROR" and "not enough free space" in image["error"]
    assert image["format"] == "qcow2"
    kept = stored_file(srv, image)
    assert hashlib.sha256(kept.read_bytes()).hexdigest() == image["source_sha256"]
    assert list((tmp_path / "small-temp").iterdir()) == []
