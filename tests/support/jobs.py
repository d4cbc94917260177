"""Helpers for job tests: submit demo jobs and wait for states."""

from __future__ import annotations

import time
from typing import Any

import httpx


def submit(client: httpx.Client, kind: str = "sleep-and-count", **params: Any) -> dict[str, Any]:
    node = params.pop("node", None)
    resp = client.post("/api/v1/jobs", json={"kind": kind, "params": params, "node": node})
    assert resp.status_code == 202, resp.text
    body: dict[str, Any] = resp.json()
    return body


def wait_for(
    client: httpx.Client, job_id: str, statuses: set[str], timeout: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never reached {statuses}: {job}")
