"""Nothing incomplete is published (issue 14.1), and uploads are bounded (issue 13.7)."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from diskvault.config import Settings
from diskvault.images import admission, digest, sparse
from diskvault.jobs.runner import run_job
from diskvault.tools import qemu_img
from support import qemu_io
from support.http import assert_problem, auth
from support.images_util import (
    expected_raw,
    patterned,
    reference_digest,
    temp_leftovers,
    upload,
)
from support.server import ServerProcess

MiB = 1024 * 1024


@pytest.fixture
def api(app_client: TestClient, admin_token: str) -> TestClient:
    app_client.headers.update(auth(admin_token))
    return app_client


def nothing_kept(settings: Settings, image: dict[str, Any]) -> None:
    assert image["status"] == "ERROR" and image["error"]
    assert temp_leftovers(settings.DATA_DIR, image["id"]) == []
    assert not settings.image_dir.exists() or not any(settings.image_dir.rglob("*.*"))


def only_image(api: TestClient) -> dict[str, Any]:
    items = api.get("/api/v1/images").json()["items"]
    assert len(items) == 1
    image: dict[str, Any] = items[0]
    return image


def truncated(tmp_path: Path, fmt: str) -> Path:
    """A 16 MiB disk with 12 MiB of data, cut at 60% of its file."""
    whole = tmp_path / f"whole.{fmt}"
    qemu_img.create(whole, fmt, 16 * MiB)
    qemu_io.write_pattern(whole, fmt, 0, 12 * MiB, 0xAA)
    cut = tmp_path / f"cut.{fmt}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 6 // 10])
    return cut


def test_a_multipart_body_without_its_closing_boundary_ends_error(
    api: TestClient, settings: Settings, tmp_path: Path
) -> None:
    src = patterned(tmp_path / "disk.qcow2", "qcow2").read_bytes()
    body = (
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="d.qcow2"\r\n\r\n'
        + src
        + b"\r\n--B--\r\n"
    )
    resp = api.post(
        "/api/v1/images/upload",
        content=body[: len(src) // 2],
        headers={"Content-Type": "multipart/form-data; boundary=B"},
    )
    assert "before its closing boundary" in assert_problem(resp, 400)["detail"]
    nothing_kept(settings, only_image(api))


@pytest.mark.parametrize("fmt", ["qcow2", "vhdx"])
def test_a_truncated_image_in_a_well_formed_body_ends_error(
    api: TestClient, settings: Settings, tmp_path: Path, fmt: str
) -> None:
    resp = upload(api, truncated(tmp_path, fmt))
    if resp.status_code == 202:  # the headers hold; qemu-img check in the job finds the cut
        run_job(settings, resp.json()["job_id"])
    else:
        assert_problem(resp, 422)
    image = only_image(api)
    nothing_kept(settings, image)
    # qemu-img check counts the qcow2's corruptions; qemu-img info already sees the VHDX cut
    assert "qemu-img check found" in image["error"] or "truncated" in image["error"]


def test_a_wrong_client_checksum_ends_error_and_a_right_one_passes(
    api: TestClient, settings: Settings, tmp_path: Path
) -> None:
    src = patterned(tmp_path / "disk.qcow2", "qcow2")
    right = hashlib.sha256(src.read_bytes()).hexdigest()
    with open(src, "rb") as fh:
        resp = api.post(
            "/api/v1/images/upload",
            files={"file": (src.name, fh, "application/octet-stream")},
            headers={"X-Checksum-Sha256": "0" * 64},
        )
    body = assert_problem(resp, 422)
    assert body["reason"] == "checksum-mismatch" and right in body["detail"]
    nothing_kept(settings, only_image(api))
    api.delete(f"/api/v1/images/{body['image_id']}")
    ok = upload(api, src, checksum_sha256=right)  # as a form field
    assert ok.status_code == 202 and ok.json()["source_sha256"] == right
    run_job(settings, ok.json()["job_id"])
    assert api.get(f"/api/v1/images/{ok.json()['id']}").json()["status"] == "READY"


def test_the_sparse_stream_is_checked_by_its_extents_digest(
    api: TestClient, settings: Settings, tmp_path: Path
) -> None:
    src = patterned(tmp_path / "disk.qcow2", "qcow2")
    stream = b"".join(sparse.encode(src))
    headers = {"Content-Type": sparse.CONTENT_TYPE}
    wrong = api.post(
        "/api/v1/images/upload",
        content=stream,
        headers={**headers, "X-Checksum-Sha256-Extents": "f" * 64},
    )
    assert assert_problem(wrong, 422)["reason"] == "checksum-mismatch"
    plain = api.post(
        "/api/v1/images/upload", content=stream, headers={**headers, "X-Checksum-Sha256": "f" * 64}
    )
    assert "X-Checksum-Sha256-Extents" in assert_problem(plain, 400)["detail"]
    digest = reference_digest(src.read_bytes())
    ok = api.post(
        "/api/v1/images/upload",
        content=stream,
        headers=headers,
        params={"checksum_sha256_extents": digest},
    )
    assert ok.status_code == 202 and ok.json()["source_digest"] == digest


def test_a_utf8_filename_is_accepted(api: TestClient, tmp_path: Path) -> None:
    """Finding 13.11: a UTF-8 file name was answered 400."""
    src = patterned(tmp_path / "disk.qcow2", "qcow2")
    with open(src, "rb") as fh:
        resp = api.post(
            "/api/v1/images/upload",
            files={"file": ("Диск ü 日本.qcow2", fh, "application/octet-stream")},
        )
    assert resp.status_code == 202, resp.text
    assert resp.json()["name"] == "Диск ü 日本.qcow2"
    assert resp.json()["details"]["filename"] == "Диск ü 日本.qcow2"


def test_upload_and_job_limits_answer_429(
    api: TestClient, settings: Settings, tmp_path: Path
) -> None:
    src = patterned(tmp_path / "disk.qcow2", "qcow2")
    settings.UPLOADS_PER_USER = 1
    with admission.upload_slot(settings, "admin"):  # an upload of admin's in progress
        resp = upload(api, src)
    body = assert_problem(resp, 429)
    assert body["setting"] == "DISKVAULT_UPLOADS_PER_USER" and body["limit"] == 1
    assert resp.headers["Retry-After"] == str(admission.UPLOAD_RETRY_S)
    assert api.get("/api/v1/images").json()["total"] == 0  # refused before any record
    settings.JOBS_PER_USER = 1
    first = upload(api, src)  # its job stays queued (nothing runs it)
    assert first.status_code == 202
    resp = upload(api, src)
    body = assert_problem(resp, 429)
    assert body["setting"] == "DISKVAULT_JOBS_PER_USER" and "Retry-After" in resp.headers
    run_job(settings, first.json()["job_id"])
    url = f"/api/v1/images/{first.json()['id']}"
    assert upload(api, src).status_code == 202  # a slot is free again
    assert_problem(api.post(f"{url}/convert", json={"target_format": "qcow2"}), 429)


def _stall(server: ServerProcess, token: str, sent: int) -> socket.socket:
    """Start a multipart upload declaring 64 MiB, send ``sent`` bytes of it, then go quiet."""
    head = b'--B\r\nContent-Disposition: form-data; name="file"; filename="x.img"\r\n\r\n'
    conn = socket.create_connection(("127.0.0.1", server.port))
    conn.sendall(
        (
            "POST /api/v1/images/upload HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {token}\r\n"
            "Content-Type: multipart/form-data; boundary=B\r\n"
            f"Content-Length: {64 * MiB}\r\n\r\n"
        ).encode()
        + head
        + os.urandom(sent)
    )
    return conn


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_slow_uploads_are_bounded_in_number_memory_and_time(tmp_path: Path) -> None:
    """Finding 13.7 against a real server: 40 stalled uploads, a 41st, then the idle timeout."""
    env = {"DISKVAULT_UPLOADS_PER_USER": "40", "DISKVAULT_UPLOAD_IDLE_TIMEOUT_S": "3"}
    with ServerProcess(tmp_path / "srv", env=env) as server:
        assert server.proc is not None
        token = server.login()
        before = _rss(server.proc.pid)
        conns = [_stall(server, token, 900 * 1024) for _ in range(40)]
        with server.client(token) as client:
            while client.get("/api/v1/images").json()["total"] < 40:
                pass  # every upload has begun
            grown = _rss(server.proc.pid) - before
            refused = client.post("/api/v1/images/upload", files={"file": ("y.img", b"x" * 512)})
            assert refused.status_code == 429, refused.text
            assert refused.json()["setting"] == "DISKVAULT_UPLOADS_PER_USER"
            answers = []
            for conn in conns:
                conn.settimeout(60)
                answers.append(conn.recv(200).split(b"\r\n", 1)[0])
                conn.close()
            assert set(answers) == {b"HTTP/1.1 408 Request Timeout"}, answers
            images = client.get("/api/v1/images", params={"limit": 100}).json()["items"]
            assert {i["status"] for i in images} == {"ERROR"}
            assert "DISKVAULT_UPLOAD_IDLE_TIMEOUT_S" in images[0]["error"]
            assert not list((tmp_path / "srv" / "tmp").glob("*"))
            ok = client.post("/api/v1/images/upload", files={"file": ("y.img", b"x" * 512)})
            assert ok.status_code == 202, ok.text  # the slots were given back
    print(f"40 slow uploads: serve RSS {before / MiB:.0f} MiB + {grown / MiB:.1f} MiB")
    assert grown < 200 * MiB, f"40 slow uploads grew RSS by {grown // MiB} MiB"


def test_a_resize_to_a_tebibyte_hashes_only_the_data(
    api: TestClient, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 13.5: the digest after a resize reads the data, not the new holes."""
    hashers: list[digest.ExtentHasher] = []

    class Recording(digest.ExtentHasher):
        def __init__(self) -> None:
            super().__init__()
            hashers.append(self)

    image = upload(api, patterned(tmp_path / "disk.qcow2", "qcow2"))
    run_job(settings, image.json()["job_id"])
    monkeypatch.setattr(digest, "ExtentHasher", Recording)
    tib = 1024**4
    resp = api.post(f"/api/v1/images/{image.json()['id']}/resize", json={"size": tib})
    assert resp.status_code == 202, resp.text
    run_job(settings, resp.json()["job_id"])
    grown = api.get(f"/api/v1/images/{image.json()['id']}").json()
    assert grown["status"] == "READY" and grown["virtual_size"] == tib
    assert len(hashers) == 1 and hashers[0].fed <= 4 * 65536  # the four 64 KiB patterns
    expected = digest.ExtentHasher()
    data = expected_raw(tmp_path / "e.raw").read_bytes()
    expected.update(0, data)
    assert grown["digest"] == expected.hexdigest(tib)
