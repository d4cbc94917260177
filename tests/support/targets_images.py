"""Images for target e2e tests, uploaded through the images API."""

from __future__ import annotations

import time
from typing import Any

import httpx


def upload_image(
    client: httpx.Client, name: str, data: bytes, *, target_format: str | None = None
) -> dict[str, Any] | None:
    """Upload ``data`` and wait until the image settles; None if there is no images API."""
    params = {"target_format": target_format} if target_format else {}
    resp = client.post(
        "/api/v1/images/upload",
        params=params,
        files={"file": (f"{name}.raw", data, "application/octet-stream")},
        data={"name": name, "image_type": "system"},
    )
    if resp.status_code == 404:
        return None
    assert resp.status_code == 202, resp.text
    image_id = resp.json()["id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        image: dict[str, Any] = client.get(f"/api/v1/images/{image_id}").json()
        if image["status"] in ("READY", "ERROR"):
            assert image["status"] == "READY", image
            return image
        time.sleep(0.1)
    raise AssertionError(f"image {image_id} never became READY")
