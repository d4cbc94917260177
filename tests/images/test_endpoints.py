"""The image API in-process; jobs are run inline with the job runner (WORKERS=0)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from diskvault.config import Settings
from diskvault.images import service, sparse
from diskvault.jobs.runner import run_job
from diskvault.tools import qemu_img
from support.http import assert_problem, auth
from support.images_util import (
    SIZE,
    expected_raw,
    file_server,
    patterned,
    reference_digest,
    temp_leftovers,
    upload,
)

MiB = 1024 * 1024


@pytest.fixture
def api(app_client: TestClient, admin_token: str) -> TestClient:
    app_client.headers.update(auth(admin_token))
    return app_client


def processed(api: TestClient, settings: Settings, resp: Any) -> dict[str, Any]:
    """Run the job a 202 response queued, then return the image."""
    assert resp.status_code == 202, resp.text
    body = resp.json()
    run_job(settings, body["job_id"])
    image: dict[str, Any] = api.get(f"/api/v1/images/{body['id']}").json()
    return image


@pytest.fixture
def ready(api: TestClient, settings: Settings, tmp_path: Path) -> dict[str, Any]:
    image = processed(api, settings, upload(api, patterned(tmp_path / "disk.qcow2", "qcow2")))
    assert image["status"] == "READY", image
    return image


def test_upload_converts_to_raw_with_checksums(
    api: TestClient, settings: Settings, tmp_path: Path
) -> None:
    src = patterned(tmp_path / "disk.qcow2", "qcow2")
    resp = upload(api, src, name="Disk", image_type="game")
    body = resp.json()
    assert body["status"] == "PROCESSING" and body["virtual_size"] == SIZE
    assert body["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    image = processed(api, settings, resp)
    expected = expected_raw(tmp_path / "expected.raw")
    assert image["status"] == "READY" and image["format"] == "raw"
    assert image["name"] == "Disk" and image["image_type"] == "game" and image["owner"] == "admin"
    assert image["digest"] == reference_digest(expected.read_bytes())
    assert image["sha256"] is None  # a plain SHA-256 of the output would hash its holes
    assert image["virtual_size"] == image["file_size"] == SIZE
    assert image["actual_size"] < SIZE  # sparse
    assert temp_leftovers(settings.DATA_DIR, image["id"]) == []
    status = api.get(f"/api/v1/images/{image['id']}/conversion-status").json()
    assert status["percent"] == 100 and status["job_status"] == "succeeded"
    assert api.get(f"/api/v1/images/{image['id']}/download").content == expected.read_bytes()


def test_sparse_stream_upload_sends_only_data(
    api: TestClient, settings: Settings, tmp_path: Path
) -> None:
    src = patterned(tmp_path / "disk.qcow2", "qcow2")
    with open(src, "ab") as fh:  # trailing zeros the stream skips but the checksum covers
        fh.write(bytes(2 * MiB))
    stream = b"".join(sparse.encode(src))
    assert len(stream) < src.stat().st_size
    resp = api.post(
        "/api/v1/images/upload",
        params={"name": "Sparse", "image_type": "data"},
        content=stream,
        headers={"Content-Type": sparse.CONTENT_TYPE},
    )
    assert resp.json()["source_digest"] == reference_digest(src.read_bytes())
    assert resp.json()["source_sha256"] is None  # its gaps are not hashed
    image = processed(api, settings, resp)
    assert image["status"] == "READY" and image["name"] == "Sparse"
    assert image["image_type"] == "data"
    expected = expected_raw(tmp_path / "expected.raw")
    assert api.get(f"/api/v1/images/{image['id']}/download").content == expected.read_bytes()
    bad = api.post(
        "/api/v1/images/upload",
        content=stream[:-16],
        headers={"Content-Type": sparse.CONTENT_TYPE},
    )
    assert "ended before its end record" in assert_problem(bad, 400)["detail"]
    failed = api.get("/api/v1/images", params={"status": "ERROR"}).json()["items"]
    assert failed and temp_leftovers(settings.DATA_DIR, failed[0]["id"]) == []


def test_target_format_qcow2_and_raw_passthrough(
    api: TestClient, settings: Settings, tmp_path: Path
) -> None:
    raw = expected_raw(tmp_path / "plain.raw")
    image = processed(api, settings, upload(api, raw, target_format="qcow2"))
    assert image["format"] == "qcow2" and image["target_format"] == "qcow2"
    plain = processed(api, settings, upload(api, raw))
    assert plain["format"] == "raw" and plain["sha256"] == plain["source_sha256"]


def test_download_ranges(api: TestClient, ready: dict[str, Any]) -> None:
    url = f"/api/v1/images/{ready['id']}/download"
    part = api.get(url, headers={"Range": f"bytes={MiB}-{MiB + 3}"})
    assert part.status_code == 206 and part.content == b"\xbb" * 4
    assert part.headers["content-range"] == f"bytes {MiB}-{MiB + 3}/{SIZE}"
    tail = api.get(url, headers={"Range": "bytes=-2"})
    assert tail.status_code == 206 and tail.content == b"\0\0"
    bad = api.get(url, headers={"Range": f"bytes={SIZE}-"})
    assert_problem(bad, 416)
    assert bad.headers["content-range"] == f"bytes */{SIZE}"


def test_unsafe_upload_is_422_and_its_bytes_are_gone(
    api: TestClient, settings: Settings, tmp_path: Path
) -> None:
    evil = tmp_path / "evil.qcow2"
    qemu_img.create(evil, "qcow2", None, backing="/etc/passwd", backing_fmt="raw")
    body = assert_problem(upload(api, evil), 422)
    assert body["reason"] == "backing-file" and "/etc/passwd" in body["detail"]
    image = api.get(f"/api/v1/images/{body['image_id']}").json()
    assert image["status"] == "ERROR" and "backing file" in image["error"]
    assert temp_leftovers(settings.DATA_DIR, image["id"]) == []
    mismatch = assert_problem(
        upload(api, patterned(tmp_path / "d.qcow2", "qcow2"), format="raw"), 422
    )
    assert mismatch["reason"] == "format-mismatch"


BAD_FORMS: list[dict[str, Any]] = [
    {"content": b"not multipart", "headers": {"Content-Type": "text/plain"}},
    {"files": {"other": ("x", b"abc")}},
    {"files": {"file": ("x", b"abc")}, "data": {"image_type": "toaster"}},
]


def test_bad_upload_forms(api: TestClient) -> None:
    for kwargs in BAD_FORMS:
        assert_problem(api.post("/api/v1/images/upload", **kwargs), 400)


def test_viewers_cannot_upload_and_anonymous_cannot_list(api: TestClient, tmp_path: Path) -> None:
    api.post(
        "/api/v1/auth/signup",
        json={"username": "viewer1", "password": "viewer-password", "role": "viewer"},
    ).raise_for_status()
    login = {"username": "viewer1", "password": "viewer-password"}
    token = api.post("/api/v1/auth/login", json=login).json()["access_token"]
    with open(expected_raw(tmp_path / "x.raw"), "rb") as fh:
        resp = api.post("/api/v1/images/upload", files={"file": ("x.raw", fh)}, headers=auth(token))
    assert_problem(resp, 403)
    assert_problem(api.get("/api/v1/images", headers={"Authorization": ""}), 401)


def test_list_filters_and_pages(
    api: TestClient, settings: Settings, ready: dict[str, Any], tmp_path: Path
) -> None:
    evil = tmp_path / "evil.qcow2"
    qemu_img.create(evil, "qcow2", None, backing="/etc/passwd", backing_fmt="raw")
    upload(api, evil, image_type="data")
    everything = api.get("/api/v1/images").json()
    assert everything["total"] == 2
    only = api.get("/api/v1/images", params={"status": "READY", "format": "raw"}).json()
    assert [i["id"] for i in only["items"]] == [ready["id"]]
    data = api.get("/api/v1/images", params={"image_type": "data"}).json()
    assert [i["status"] for i in data["items"]] == ["ERROR"]
    page = api.get("/api/v1/images", params={"limit": 1, "offset": 1}).json()
    assert page["total"] == 2 and len(page["items"]) == 1
    assert_problem(api.get("/api/v1/images/nope"), 404)


def test_convert_and_resize(api: TestClient, settings: Settings, ready: dict[str, Any]) -> None:
    url = f"/api/v1/images/{ready['id']}"
    assert_problem(api.post(f"{url}/convert", json={"target_format": "raw"}), 409)
    image = processed(api, settings, api.post(f"{url}/convert", json={"target_format": "qcow2"}))
    assert image["format"] == "qcow2" and image["digest"] != ready["digest"]
    assert image["target_format"] == "qcow2"  # issue 17: show reports the real format
    assert image["virtual_size"] == SIZE and image["status"] == "READY"
    # grow, then shrink back (the data fits), then a shrink that would cut data
    grown = processed(api, settings, api.post(f"{url}/resize", json={"size": 2 * SIZE}))
    assert grown["virtual_size"] == 2 * SIZE and grown["digest"]
    assert_problem(api.post(f"{url}/resize", json={"size": SIZE}), 409)  # no force
    shrunk = processed(api, settings, api.post(f"{url}/resize", json={"size": SIZE, "force": True}))
    assert shrunk["virtual_size"] == SIZE
    body = assert_problem(api.post(f"{url}/resize", json={"size": MiB, "force": True}), 409)
    assert "past the new end" in body["detail"]
    assert_problem(api.post(f"{url}/resize", json={"size": 1000}), 422)  # not a 512 multiple
    raw = processed(api, settings, api.post(f"{url}/convert", json={"target_format": "raw"}))
    assert raw["digest"] == ready["digest"]  # the same bytes as before the round trip
    assert raw["target_format"] == "raw"


def test_delete_refused_while_in_use(
    api: TestClient, settings: Settings, ready: dict[str, Any]
) -> None:
    def in_use(session: Any, image_id: str) -> str | None:
        return "target t1 serves it" if image_id == ready["id"] else None

    service.register_usage_check(in_use)
    try:
        body = assert_problem(api.delete(f"/api/v1/images/{ready['id']}"), 409)
        assert "target t1 serves it" in body["detail"]
    finally:
        service._USAGE_CHECKS.remove(in_use)
    stored = list((settings.image_dir / ready["id"]).iterdir())
    assert len(stored) == 1
    assert api.delete(f"/api/v1/images/{ready['id']}").status_code == 204
    assert not stored[0].exists()
    assert_problem(api.get(f"/api/v1/images/{ready['id']}"), 404)


@pytest.fixture
def import_root(settings: Settings, tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "imports"
    root.mkdir()
    settings.IMPORT_ROOTS = [root]
    yield root
    settings.IMPORT_ROOTS = []


def test_import_path(
    api: TestClient, settings: Settings, import_root: Path, tmp_path: Path
) -> None:
    src = patterned(import_root / "disk.vmdk", "vmdk")
    image = processed(api, settings, api.post("/api/v1/images/import", json={"path": str(src)}))
    assert image["status"] == "READY" and image["name"] == "disk.vmdk"
    assert image["source"] == str(src) and src.exists()
    outside = patterned(tmp_path / "outside.qcow2", "qcow2")
    assert_problem(api.post("/api/v1/images/import", json={"path": str(outside)}), 403)
    (import_root / "link.qcow2").symlink_to(outside)
    link = str(import_root / "link.qcow2")
    assert_problem(api.post("/api/v1/images/import", json={"path": link}), 403)
    evil = import_root / "evil.qcow2"
    qemu_img.create(evil, "qcow2", None, backing="/etc/passwd", backing_fmt="raw")
    body = assert_problem(api.post("/api/v1/images/import", json={"path": str(evil)}), 422)
    assert body["reason"] == "backing-file"
    assert_problem(api.post("/api/v1/images/import", json={}), 422)
    nul = assert_problem(api.post("/api/v1/images/import", json={"path": f"{src}\0x"}), 422)
    assert "NUL" in nul["detail"]


def test_import_url_with_allowlisted_port_and_redirects(
    api: TestClient, settings: Settings, tmp_path: Path
) -> None:
    www = tmp_path / "www"
    www.mkdir()
    patterned(www / "disk.vdi", "vdi")
    with (
        file_server(www) as other,
        file_server(www, {"/latest": "/disk.vdi", "/elsewhere": other.url("disk.vdi")}) as srv,
    ):
        assert_problem(api.post("/api/v1/images/import", json={"url": srv.url("disk.vdi")}), 403)
        settings.IMPORT_URL_ALLOWED_PORTS = [srv.port]
        for host in ("127.0.0.1", "localhost", "2130706433"):
            url = f"http://{host}:{srv.port}/disk.vdi"
            body = assert_problem(api.post("/api/v1/images/import", json={"url": url}), 403)
            assert body["reason"] == "loopback"
            assert body["setting"] == "DISKVAULT_IMPORT_URL_ALLOWED_HOSTS"
            assert "DISKVAULT_IMPORT_URL_ALLOWED_HOSTS" in body["detail"]
        assert api.get("/api/v1/images").json()["total"] == 0
        assert srv.seen_hosts == []
        settings.IMPORT_URL_ALLOWED_HOSTS = ["127.0.0.1"]
        image = processed(
            api, settings, api.post("/api/v1/images/import", json={"url": srv.url("latest")})
        )
        assert image["status"] == "READY" and image["name"] == "latest"
        assert image["digest"] == reference_digest(expected_raw(tmp_path / "e.raw").read_bytes())
        refused = processed(
            api, settings, api.post("/api/v1/images/import", json={"url": srv.url("elsewhere")})
        )
    assert refused["status"] == "ERROR" and f"port {other.port} is not allowed" in refused["error"]
    assert temp_leftovers(settings.DATA_DIR, refused["id"]) == []
