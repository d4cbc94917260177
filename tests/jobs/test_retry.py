"""A failed or cancelled job is started again as a new job (API and console), only for
kinds whose runs are checked afresh; the old job keeps its error."""

from __future__ import annotations

from fastapi.testclient import TestClient

from diskvault.config import Settings
from diskvault.db.engine import session_scope
from diskvault.jobs.models import Job, JobStatus
from support.console import sign_in
from support.http import assert_problem, auth


def _job(settings: Settings, kind: str, status: JobStatus) -> str:
    with session_scope(settings.DATABASE_URL) as s:
        job = Job(kind=kind, params={"vm_name": "web1", "backup_type": "auto"}, status=status)
        job.error = "the source's disk vanished" if status == JobStatus.failed else None
        s.add(job)
        s.flush()
        return job.id


def test_retry_starts_a_new_job_with_the_same_parameters(
    app_client: TestClient, admin_token: str, settings: Settings
) -> None:
    h = auth(admin_token)
    failed = _job(settings, "backup-run", JobStatus.failed)
    resp = app_client.post(f"/api/v1/jobs/{failed}/retry", headers=h)
    assert resp.status_code == 202, resp.text
    again = resp.json()
    assert again["id"] != failed and again["kind"] == "backup-run"
    assert again["params"] == {"vm_name": "web1", "backup_type": "auto"}
    assert again["status"] == "queued" and again["owner"] == "admin"
    old = app_client.get(f"/api/v1/jobs/{failed}", headers=h).json()
    assert old["status"] == "failed" and old["error"] == "the source's disk vanished"

    done = _job(settings, "backup-run", JobStatus.succeeded)
    assert (
        "only failed or cancelled"
        in assert_problem(app_client.post(f"/api/v1/jobs/{done}/retry", headers=h), 409)["detail"]
    )
    image_job = _job(settings, "image-process", JobStatus.failed)
    assert (
        "not re-run"
        in assert_problem(app_client.post(f"/api/v1/jobs/{image_job}/retry", headers=h), 409)[
            "detail"
        ]
    )


def test_the_console_offers_retry_for_a_failed_job(
    app_client: TestClient, settings: Settings
) -> None:
    failed = _job(settings, "backup-verify", JobStatus.failed)
    csrf = sign_in(app_client)
    page = app_client.get(f"/jobs/{failed}").text
    assert f"/jobs/{failed}/retry" in page
    resp = app_client.post(f"/jobs/{failed}/retry", data={"csrf": csrf}, follow_redirects=False)
    assert resp.status_code == 303, resp.text
    new_page = app_client.get(resp.headers["location"]).text
    assert "Started again as job" in new_page and "backup-verify" in new_page
    image_job = _job(settings, "image-process", JobStatus.failed)
    assert f"/jobs/{image_job}/retry" not in app_client.get(f"/jobs/{image_job}").text


def test_a_finished_job_shows_its_throughput_chart(
    app_client: TestClient, settings: Settings
) -> None:
    with session_scope(settings.DATABASE_URL) as s:
        job = Job(kind="backup-run", params={}, status=JobStatus.succeeded)
        job.samples = [[0.0, 100.0], [1.0, 300.0], [2.0, 200.0]]
        s.add(job)
        s.flush()
        job_id = job.id
    sign_in(app_client)
    page = app_client.get(f"/jobs/{job_id}").text
    assert 'points="0.0,26.7 120.0,0.0 240.0,13.3"' in page
    assert "Throughput over 2 s, peak 300" in page
