"""The repository encryption API (SQLite and PostgreSQL): a created key's paper key
once, bad key files, 409 for an encryption change with points, and rekey."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from diskvault.backups import keys
from diskvault.config import Settings
from support.backups_env import add_source, backup, create_disk
from support.http import assert_problem, auth

MiB = 1024 * 1024


def test_encrypted_repository_api(
    app_client: TestClient, admin_token: str, settings: Settings, tmp_path: Path
) -> None:
    h = auth(admin_token)
    key = tmp_path / "vault.key"
    body = {
        "name": "vault",
        "path": str(tmp_path / "vault"),
        "encryption": "luks",
        "key_file": str(key),
        "create_key": True,
    }
    created = app_client.post("/api/v1/repositories", json=body, headers=h)
    assert created.status_code == 201, created.text
    repo = created.json()
    assert repo["key_fingerprint"] == keys.load(key).fingerprint
    assert repo["paper_key"] and repo["key_fingerprint"] in repo["paper_key"]
    again = app_client.get("/api/v1/repositories/vault", headers=h).json()
    assert again["paper_key"] is None and again["encryption"] == "luks"

    short = tmp_path / "short.key"
    short.write_text("abc")
    short.chmod(0o600)
    bad = {"name": "bad", "path": str(tmp_path / "bad"), "encryption": "luks"}
    detail = assert_problem(
        app_client.post("/api/v1/repositories", json=bad | {"key_file": str(short)}, headers=h),
        422,
    )["detail"]
    assert "too short" in detail and str(short) in detail
    assert_problem(
        app_client.post("/api/v1/repositories", json=bad | {"key_file": "relative.key"}, headers=h),
        422,
    )
    assert_problem(
        app_client.post("/api/v1/repositories", json=bad | {"compression": "zstd"}, headers=h),
        422,
    )

    # Empty: encryption may still change; with points it is a 409 (rekey instead).
    off = app_client.patch("/api/v1/repositories/vault", json={"encryption": "none"}, headers=h)
    assert off.status_code == 200 and off.json()["key_fingerprint"] is None
    on = app_client.patch(
        "/api/v1/repositories/vault",
        json={"encryption": "luks", "key_file": str(key)},
        headers=h,
    )
    assert on.status_code == 200 and on.json()["key_fingerprint"] == repo["key_fingerprint"]
    disk = create_disk(tmp_path / "a.qcow2", size=8 * MiB)
    add_source(settings, "vm-a", "qcow2", disks=[str(disk)])
    backup(settings, "vm-a", repo["id"])
    locked = app_client.patch("/api/v1/repositories/vault", json={"encryption": "none"}, headers=h)
    assert "rekey" in assert_problem(locked, 409)["detail"]
    assert app_client.get("/api/v1/repositories/vault", headers=h).json()["encryption"] == "luks"

    same = app_client.post(
        "/api/v1/repositories/vault/rekey", json={"key_file": str(key)}, headers=h
    )
    assert_problem(same, 422)
    new_key = tmp_path / "vault-2.key"
    rekeyed = app_client.post(
        "/api/v1/repositories/vault/rekey",
        json={"key_file": str(new_key), "create_key": True},
        headers=h,
    )
    assert rekeyed.status_code == 200, rekeyed.text
    out = rekeyed.json()
    assert out["key_fingerprint"] == keys.load(new_key).fingerprint and out["paper_key"]
    assert out["keys"] == [{"fingerprint": repo["key_fingerprint"], "key_file": str(key)}]
    plain = app_client.post(
        "/api/v1/repositories", json={"name": "plain", "path": str(tmp_path / "p")}, headers=h
    )
    assert plain.status_code == 201
    assert_problem(app_client.post("/api/v1/repositories/plain/rekey", json={}, headers=h), 400)


def test_a_null_in_a_repository_patch_changes_nothing(
    app_client: TestClient, admin_token: str, tmp_path: Path
) -> None:
    """Found by schemathesis: an explicit null compression was written to a NOT NULL column."""
    h = auth(admin_token)
    body = {"name": "plain", "path": str(tmp_path / "plain"), "compression": "zstd"}
    assert app_client.post("/api/v1/repositories", json=body, headers=h).status_code == 201
    nulls = {"compression": None, "encryption": None, "key_file": None, "create_key": None}
    resp = app_client.patch("/api/v1/repositories/plain", json=nulls, headers=h)
    assert resp.status_code == 200, resp.text
    assert resp.json()["compression"] == "zstd" and resp.json()["encryption"] == "none"
