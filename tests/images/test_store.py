"""The image library on an S3 image store (moto): staged work, published results."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from fastapi.testclient import TestClient

from diskvault.config import Settings
from diskvault.jobs.runner import run_job
from support.http import auth
from support.images_util import SIZE, expected_raw, patterned, reference_digest, upload


@pytest.fixture
def bucket(moto_s3: str, settings: Settings) -> Any:
    name = f"dv-images-{uuid.uuid4().hex[:12]}"
    s3 = boto3.resource("s3", endpoint_url=moto_s3, region_name="us-east-1")
    s3.create_bucket(Bucket=name)
    settings.IMAGE_STORE_URL = f"s3://{name}/lib?endpoint_url={moto_s3}"
    return s3.Bucket(name)


def run(api: TestClient, settings: Settings, resp: Any) -> dict[str, Any]:
    assert resp.status_code == 202, resp.text
    run_job(settings, resp.json()["job_id"])
    image: dict[str, Any] = api.get(f"/api/v1/images/{resp.json()['id']}").json()
    return image


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_s3_store_end_to_end(
    bucket: Any, app_client: TestClient, admin_token: str, settings: Settings, tmp_path: Path
) -> None:
    api = app_client
    api.headers.update(auth(admin_token))
    expected = expected_raw(tmp_path / "expected.raw").read_bytes()
    image = run(api, settings, upload(api, patterned(tmp_path / "d.vhdx", "vhdx")))
    assert image["status"] == "READY" and image["format"] == "raw"
    keys = [o.key for o in bucket.objects.all()]
    assert len(keys) == 1 and keys[0].startswith(f"lib/{image['id']}/")
    assert not any(settings.image_dir.iterdir()) and not any(settings.temp_dir.iterdir())
    url = f"/api/v1/images/{image['id']}"
    part = api.get(f"{url}/download", headers={"Range": "bytes=1048576-1048577"})
    assert part.status_code == 206 and part.content == b"\xbb\xbb"
    assert reference_digest(api.get(f"{url}/download").content) == image["digest"]
    assert image["digest"] == reference_digest(expected)

    qcow = run(api, settings, api.post(f"{url}/convert", json={"target_format": "qcow2"}))
    assert qcow["format"] == "qcow2"
    grown = run(api, settings, api.post(f"{url}/resize", json={"size": 2 * SIZE}))
    assert grown["virtual_size"] == 2 * SIZE and grown["status"] == "READY"
    keys = [o.key for o in bucket.objects.all()]
    assert len(keys) == 1 and keys[0].endswith(".qcow2")  # old files were replaced
    assert not any(settings.temp_dir.iterdir())
    assert api.delete(url).status_code == 204
    assert list(bucket.objects.all()) == []
