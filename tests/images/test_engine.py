"""Cancelling image jobs at awkward moments, odd raw sizes and the resize limit."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from diskvault.config import Settings
from diskvault.db.engine import session_scope
from diskvault.images import tasks
from diskvault.jobs.context import JobContext
from diskvault.jobs.models import Job
from diskvault.jobs.runner import run_job
from diskvault.tools.process import Cancelled
from support.http import assert_problem, auth
from support.images_util import patterned, reference_digest, temp_leftovers, upload


@pytest.fixture
def api(app_client: TestClient, admin_token: str) -> TestClient:
    app_client.headers.update(auth(admin_token))
    return app_client


def image_of(api: TestClient, image_id: str) -> dict[str, Any]:
    body: dict[str, Any] = api.get(f"/api/v1/images/{image_id}").json()
    return body


def ready_image(api: TestClient, settings: Settings, src: Path) -> dict[str, Any]:
    resp = upload(api, src)
    assert resp.status_code == 202, resp.text
    run_job(settings, resp.json()["job_id"])
    image = image_of(api, resp.json()["id"])
    assert image["status"] == "READY", image
    return image


def test_cancelling_a_queued_upload_or_import_ends_in_error_and_deletes(
    api: TestClient, settings: Settings, tmp_path: Path
) -> None:
    root = tmp_path / "imports"
    root.mkdir()
    settings.IMPORT_ROOTS = [root]
    uploaded = upload(api, patterned(tmp_path / "a.qcow2", "qcow2")).json()
    imported = api.post(
        "/api/v1/images/import", json={"path": str(patterned(root / "b.qcow2", "qcow2"))}
    ).json()
    assert (settings.temp_dir / f"{uploaded['id']}.source").exists()
    for queued in (uploaded, imported):
        cancelled = api.post(f"/api/v1/jobs/{queued['job_id']}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        image = image_of(api, queued["id"])
        assert image["status"] == "ERROR" and "cancelled" in image["error"], image
        assert temp_leftovers(settings.DATA_DIR, queued["id"]) == []
        run_job(settings, queued["job_id"])  # the queue's message arrives late: nothing runs
        assert image_of(api, queued["id"])["status"] == "ERROR"
        assert api.delete(f"/api/v1/images/{queued['id']}").status_code == 204


def test_cancelling_a_queued_convert_leaves_the_image_ready(
    api: TestClient, settings: Settings, tmp_path: Path
) -> None:
    image = ready_image(api, settings, patterned(tmp_path / "a.qcow2", "qcow2"))
    before = api.get(f"/api/v1/images/{image['id']}/download").content
    job = api.post(f"/api/v1/images/{image['id']}/convert", json={"target_format": "qcow2"})
    assert job.status_code == 202, job.text
    api.post(f"/api/v1/jobs/{job.json()['job_id']}/cancel").raise_for_status()
    after = image_of(api, image["id"])
    assert after["status"] == "READY" and after["sha256"] == image["sha256"]
    assert api.get(f"/api/v1/images/{image['id']}/download").content == before


class CancelWhenHashing(JobContext):
    """The user's cancel lands exactly when the resized file starts being hashed."""

    def progress(self, *args: Any, message: str | None = None, **kwargs: Any) -> None:
        super().progress(*args, message=message, **kwargs)
        if message == "computing SHA-256":
            self._cancel.set()


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_a_resize_cancelled_while_hashing_rolls_back(
    api: TestClient, settings: Settings, tmp_path: Path, fmt: str
) -> None:
    settings.DEFAULT_TARGET_FORMAT = fmt
    image = ready_image(api, settings, patterned(tmp_path / "a.vdi", "vdi"))
    stored = next((settings.image_dir / image["id"]).iterdir())
    before = hashlib.sha256(stored.read_bytes()).hexdigest()
    assert image["digest"]
    resp = api.post(
        f"/api/v1/images/{image['id']}/resize", json={"size": 4 * image["virtual_size"]}
    )
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["job_id"]
    with session_scope(settings.DATABASE_URL) as s:
        job = s.get(Job, job_id)
        assert job is not None
        ctx = CancelWhenHashing(settings, job_id, dict(job.params), 1)
    with pytest.raises(Cancelled):
        tasks.resize(ctx)
    ctx.run_cleanups()
    after = image_of(api, image["id"])
    fields = ("status", "virtual_size", "file_size", "actual_size", "sha256", "digest", "format")
    for field in fields:
        assert after[field] == image[field], field
    assert "cancelled" in after["error"]
    assert [p.name for p in (settings.image_dir / image["id"]).iterdir()] == [stored.name]
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == before
    assert [p.name for p in settings.temp_dir.iterdir() if p.name.startswith(image["id"])] == []


def test_raw_files_not_a_multiple_of_512_are_padded_as_qemu_reads_them(
    api: TestClient, settings: Settings, tmp_path: Path
) -> None:
    data = os.urandom(1000)
    src = tmp_path / "odd.img"
    src.write_bytes(data)
    image = ready_image(api, settings, src)
    assert image["format"] == "raw" and image["virtual_size"] == 1024
    assert image["source_sha256"] == hashlib.sha256(data).hexdigest()
    padded = data + bytes(24)
    assert image["file_size"] == 1024 and image["digest"] == reference_digest(padded)
    assert api.get(f"/api/v1/images/{image['id']}/download").content == padded


def test_resizing_past_the_limit_names_the_limit_not_a_shrink(
    api: TestClient, settings: Settings, tmp_path: Path
) -> None:
    image = ready_image(api, settings, patterned(tmp_path / "a.qcow2", "qcow2"))
    too_big = settings.MAX_VIRTUAL_SIZE + 512
    resp = api.post(f"/api/v1/images/{image['id']}/resize", json={"size": too_big})
    body = assert_problem(resp, 422)
    assert "over the size limit" in body["detail"] and "shrink" not in body["detail"]
    assert body["setting"] == "DISKVAULT_MAX_VIRTUAL_SIZE"
    assert body["limit"] == settings.MAX_VIRTUAL_SIZE
    assert image_of(api, image["id"])["status"] == "READY"
