"""The HTTP API in-process (SQLite and PostgreSQL): validation, errors, refusals."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from diskvault.config import Settings
from support.backups_env import backup, create_disk, write_random
from support.http import assert_problem, auth


def test_sources_repositories_and_errors(
    app_client: TestClient, admin_token: str, tmp_path: Path
) -> None:
    h = auth(admin_token)
    disk = create_disk(tmp_path / "a.qcow2", size=8 * 1024 * 1024)
    ok = app_client.post(
        "/api/v1/sources", json={"name": "vm-a", "kind": "qcow2", "path": str(disk)}, headers=h
    )
    assert ok.status_code == 201, ok.text
    assert ok.json()["config"] == {"disks": [{"path": str(disk)}]}
    dup = app_client.post(
        "/api/v1/sources", json={"name": "vm-a", "kind": "qcow2", "path": str(disk)}, headers=h
    )
    assert "already exists" in assert_problem(dup, 409)["detail"]
    bad = app_client.post(
        "/api/v1/sources", json={"name": "vm-b", "kind": "nbd", "url": "http://x"}, headers=h
    )
    assert "nbd://" in assert_problem(bad, 422)["detail"]
    assert_problem(
        app_client.post("/api/v1/sources", json={"name": "../x", "kind": "raw"}, headers=h), 422
    )
    names = [s["name"] for s in app_client.get("/api/v1/sources", headers=h).json()["items"]]
    assert names == ["vm-a"]

    repo = app_client.post(
        "/api/v1/repositories", json={"name": "nas", "path": str(tmp_path / "nas")}, headers=h
    )
    assert repo.status_code == 201, repo.text
    assert repo.json()["available_size_bytes"] > 0
    assert repo.json()["immutable_flag"] in (True, False)
    s3 = app_client.post(
        "/api/v1/repositories", json={"name": "s3x", "kind": "s3", "url": "s3://"}, headers=h
    )
    assert_problem(s3, 400)

    job = app_client.post(
        "/api/v1/backup/start", json={"vm_name": "vm-a", "repository": "nas"}, headers=h
    )
    assert job.status_code == 202 and job.json()["kind"] == "backup-run"
    assert job.json()["params"]["repository_id"] == repo.json()["id"]
    # the backup spec's name of the default repository
    spec = app_client.post(
        "/api/v1/backup/start", json={"vm_name": "vm-a", "repository": "local"}, headers=h
    )
    assert spec.status_code == 202, spec.text
    default = app_client.get("/api/v1/repositories/default", headers=h).json()
    assert spec.json()["params"]["repository_id"] == default["id"]
    assert app_client.get("/api/v1/repositories/local", headers=h).json()["id"] == default["id"]
    missing = app_client.post("/api/v1/backup/start", json={"vm_name": "nope"}, headers=h)
    assert "diskvault source list" in assert_problem(missing, 404)["detail"]
    to_s3 = app_client.post(
        "/api/v1/backup/start", json={"vm_name": "vm-a", "repository": "nope"}, headers=h
    )
    assert_problem(to_s3, 404)
    assert_problem(app_client.get("/api/v1/backup/0123", headers=h), 404)
    assert_problem(app_client.delete("/api/v1/backup/0123", headers=h), 404)


def test_policies(app_client: TestClient, admin_token: str, tmp_path: Path) -> None:
    h = auth(admin_token)
    disk = create_disk(tmp_path / "a.qcow2", size=8 * 1024 * 1024)
    app_client.post(
        "/api/v1/sources", json={"name": "vm-a", "kind": "qcow2", "path": str(disk)}, headers=h
    )
    body = {"name": "nightly", "sources": ["vm-a"], "schedule": "every day", "keep_daily": 7}
    assert (
        "cron"
        in assert_problem(app_client.post("/api/v1/policies", json=body, headers=h), 422)["detail"]
    )
    body["schedule"] = "0 2 * * *"
    created = app_client.post("/api/v1/policies", json=body, headers=h)
    assert created.status_code == 201, created.text
    assert created.json()["retention"] == {"keep_daily": 7}
    assert created.json()["preview"]["destructive"] is False
    assert created.json()["adopt_existing"] is False
    would = app_client.post(
        "/api/v1/policies/preview", json={**body, "name": "other", "keep_last": 1}, headers=h
    )
    assert would.status_code == 200 and would.json()["remove"] == [], would.text
    assert app_client.get("/api/v1/policies/other", headers=h).status_code == 404
    typo = app_client.patch("/api/v1/policies/nightly", json={"keep_dayly": 3}, headers=h)
    assert_problem(typo, 422)
    changed = app_client.patch(
        "/api/v1/policies/nightly", json={"keep_daily": None, "keep_last": 2}, headers=h
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["retention"] == {"keep_last": 2} and "preview" in changed.json()
    history = app_client.get("/api/v1/policies/nightly/history", headers=h).json()
    assert [e["event"] for e in history] == ["created", "changed"]
    same = app_client.post("/api/v1/policies/nightly/preview", json={}, headers=h)
    assert same.status_code == 200 and same.json()["destructive"] is False
    run = app_client.post("/api/v1/policies/nightly/run", headers=h)
    assert run.status_code == 202 and len(run.json()["job_ids"]) == 1
    assert app_client.get("/api/v1/policies/nightly", headers=h).json()["last_run_at"]


def test_immutable_point_delete_is_409_and_prune_simulates(
    app_client: TestClient, admin_token: str, settings: Settings, tmp_path: Path
) -> None:
    h = auth(admin_token)
    disk = create_disk(tmp_path / "a.qcow2", size=8 * 1024 * 1024)
    app_client.post(
        "/api/v1/sources", json={"name": "vm-a", "kind": "qcow2", "path": str(disk)}, headers=h
    )
    repo = app_client.post(
        "/api/v1/repositories",
        json={"name": "hard", "path": str(tmp_path / "hard"), "immutability_days": 1},
        headers=h,
    ).json()
    first = backup(settings, "vm-a", repo["id"])
    write_random(disk, "qcow2", 0.05, seed=5, size=8 * 1024 * 1024)
    second = backup(settings, "vm-a", repo["id"])
    got = app_client.get(f"/api/v1/backup/{second}", headers=h).json()
    assert got["immutable_until"] and got["backup_type"] == "incremental"
    assert got["throughput_bytes_per_s"] is None or got["throughput_bytes_per_s"] > 0
    refused = app_client.delete(f"/api/v1/backup/{first}", headers=h)
    assert "immutable until" in assert_problem(refused, 409)["detail"]
    chain = app_client.get("/api/v1/backup/chain", params={"vm_name": "vm-a"}, headers=h).json()
    (c,) = chain["chains"]
    assert [p["id"] for p in c["points"]] == [first, second]
    assert chain["total_size_bytes"] == sum(p["file_size"] for p in c["points"]) > 0
    sim = app_client.post(
        "/api/v1/backup/prune",
        json={"vm_name": "vm-a", "repository": "hard", "keep_last": 1, "dry_run": True},
        headers=h,
    )
    assert sim.status_code == 200, sim.text
    (disk0,) = sim.json()["disks"]
    assert all(d["reason"].startswith(("keep-last", "protected")) for d in disk0["keep"])
    assert len(disk0["keep"]) == 2 and disk0["remove"] == []
    listed = app_client.get("/api/v1/backup/list", params={"vm_name": "vm-a"}, headers=h).json()
    assert listed["total"] == 2


def test_restore_targets_are_checked_before_a_job_is_queued(
    app_client: TestClient, admin_token: str, settings: Settings, tmp_path: Path
) -> None:
    h = auth(admin_token)
    disk = create_disk(tmp_path / "a.qcow2", size=8 * 1024 * 1024)
    app_client.post(
        "/api/v1/sources", json={"name": "vm-a", "kind": "qcow2", "path": str(disk)}, headers=h
    )
    repo = app_client.post(
        "/api/v1/repositories", json={"name": "nas", "path": str(tmp_path / "nas")}, headers=h
    ).json()
    point = backup(settings, "vm-a", repo["id"])
    jobs_before = app_client.get("/api/v1/jobs", headers=h).json()["total"]

    def restore(body: dict[str, str]) -> dict[str, object]:
        resp = app_client.post(f"/api/v1/backup/{point}/restore", json=body, headers=h)
        return assert_problem(resp, 403)

    for path in ("/etc/cron.d/evil", f"{settings.DATA_DIR}/restores/../secret.key.new"):
        body = restore({"target": "file", "path": path})
        assert body["setting"] == "DISKVAULT_BACKUP_RESTORE_ROOTS"
        assert "DISKVAULT_BACKUP_RESTORE_ROOTS" in str(body["detail"])
    body = restore({"target": "nbd", "url": "nbd://127.0.0.1:22/x"})
    assert body["setting"] == "DISKVAULT_BACKUP_RESTORE_NBD_TARGETS"
    assert app_client.get("/api/v1/jobs", headers=h).json()["total"] == jobs_before
    assert not Path("/etc/cron.d/evil").exists()
    ok = app_client.post(
        f"/api/v1/backup/{point}/restore",
        json={"target": "file", "path": f"{settings.DATA_DIR}/restores/vm-a.qcow2"},
        headers=h,
    )
    assert ok.status_code == 202, ok.text
