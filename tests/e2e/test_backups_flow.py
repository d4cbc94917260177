"""Backups end to end against real ``diskvault serve`` processes and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.backups_env import create_disk, same, save, write_random
from support.jobs import wait_for
from support.server import ServerProcess

MiB = 1024 * 1024
BIN = str(Path(sys.executable).parent / "diskvault")
ENV = {"DISKVAULT_WORKERS": "6", "DISKVAULT_JOB_HEARTBEAT_S": "0.5"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("backups-srv"), env=ENV)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def api(srv: ServerProcess) -> Iterator[httpx.Client]:
    with srv.client(srv.login()) as client:
        yield client


def cli(
    srv: ServerProcess, api: httpx.Client, tmp: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DISKVAULT_URL": srv.url,
        "DISKVAULT_TOKEN": api.headers["authorization"].split()[1],
        "XDG_CONFIG_HOME": str(tmp),
        "COLUMNS": "200",
    }
    return subprocess.run(
        [BIN, *args], env=env, capture_output=True, text=True, timeout=120, input=stdin
    )


def points(api: httpx.Client, vm: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = api.get("/api/v1/backup/list", params={"vm_name": vm}).json()[
        "items"
    ]
    return sorted(items, key=lambda b: b["created_at"])


def image_of(srv: ServerProcess, point: dict[str, Any]) -> Path:
    return srv.data_dir / "backups" / point["path"]


def test_cli_flow(srv: ServerProcess, api: httpx.Client, tmp_path: Path) -> None:
    disk = create_disk(tmp_path / "web.qcow2", size=32 * MiB)
    out = cli(
        srv, api, tmp_path, "backup", "source", "add", "web", "--kind", "qcow2", "--disk", "X"
    )
    assert out.returncode == 2 and "absolute" in out.stderr
    out = cli(
        srv, api, tmp_path, "backup", "source", "add", "web", "--kind", "qcow2", "--disk", str(disk)
    )
    assert out.returncode == 0, out.stderr
    assert "web" in cli(srv, api, tmp_path, "backup", "source", "list").stdout
    full = cli(srv, api, tmp_path, "backup", "start", "--vm", "web", "--type", "full")
    assert full.returncode == 0 and "full of disk 0" in full.stdout, full.stderr
    at_full = save(disk, tmp_path / "at-full.qcow2")
    write_random(disk, "qcow2", 0.05, seed=1, size=32 * MiB)
    inc = cli(srv, api, tmp_path, "backup", "start", "--vm", "web", "--type", "incremental")
    assert inc.returncode == 0 and "incremental of disk 0" in inc.stdout, inc.stderr
    first, second = points(api, "web")
    listed = cli(srv, api, tmp_path, "backup", "list", "--vm", "web").stdout
    # Lists show ids at their shortest unique length, 8 characters at least.
    assert first["id"][:8] in listed and second["id"][:8] in listed
    tree = cli(srv, api, tmp_path, "backup", "chain", "--vm", "web").stdout
    assert "full" in tree and "incremental" in tree and "total:" in tree
    verified = cli(srv, api, tmp_path, "backup", "verify", second["id"][:12])
    assert verified.returncode == 0 and "no problems" in verified.stdout, verified.stderr
    dest = srv.data_dir / "restores" / "restored.raw"  # the default restore root
    outside = cli(srv, api, tmp_path, "backup", "restore", first["id"], "--to", str(tmp_path / "x"))
    assert outside.returncode == 9 and "DISKVAULT_BACKUP_RESTORE_ROOTS" in outside.stderr
    restored = cli(
        srv, api, tmp_path, "backup", "restore", first["id"], "--to", str(dest), "--format", "raw"
    )
    assert restored.returncode == 0, restored.stderr
    assert same(dest, at_full, "raw", "qcow2")
    sim = cli(srv, api, tmp_path, "backup", "prune", "--vm", "web", "--keep-last", "1", "--dry-run")
    assert "remove" in sim.stdout and "keep-last 1/1" in sim.stdout, sim.stderr
    assert len(points(api, "web")) == 2
    gone = cli(srv, api, tmp_path, "backup", "delete", first["id"])
    assert gone.returncode == 0, gone.stderr
    (left,) = points(api, "web")
    assert left["id"] == second["id"] and left["backup_type"] == "full"
    assert same(image_of(srv, left), disk)
    second_repo = cli(
        srv, api, tmp_path, "backup", "repo", "add", "second", "--path", str(tmp_path / "r2")
    )
    assert second_repo.returncode == 0, second_repo.stderr
    copied = cli(srv, api, tmp_path, "backup", "copy", "--to", "second", "--vm", "web")
    assert copied.returncode == 0 and "copied 1" in copied.stdout, copied.stderr
    assert same(tmp_path / "r2" / left["path"], disk)
    bad = cli(srv, api, tmp_path, "backup", "start", "--vm", "nope")
    assert bad.returncode == 4 and "nope" in bad.stderr and "Traceback" not in bad.stderr


def test_five_at_once_and_same_disk_serialized(
    srv: ServerProcess, api: httpx.Client, tmp_path: Path
) -> None:
    for n in range(5):
        disk = create_disk(tmp_path / f"c{n}.qcow2", size=16 * MiB, seed=n)
        api.post("/api/v1/sources", json={"name": f"c{n}", "kind": "qcow2", "path": str(disk)})
    body = {"backup_type": "full", "speed": 8 * MiB}
    jobs = [
        api.post("/api/v1/backup/start", json={"vm_name": f"c{n}", **body}).json() for n in range(5)
    ]
    done = [wait_for(api, j["id"], {"succeeded", "failed"}) for j in jobs]
    assert all(j["status"] == "succeeded" for j in done), [j["error"] for j in done]
    starts = [datetime.fromisoformat(j["started_at"]) for j in done]
    ends = [datetime.fromisoformat(j["finished_at"]) for j in done]
    assert max(starts) < min(ends)  # all five were running at the same moment
    for n in range(5):
        assert same(image_of(srv, points(api, f"c{n}")[0]), tmp_path / f"c{n}.qcow2")

    twice = [
        api.post("/api/v1/backup/start", json={"vm_name": "c0", **body}).json() for _ in range(2)
    ]
    for job in twice:
        assert wait_for(api, job["id"], {"succeeded", "failed"})["status"] == "succeeded"
    a, b = points(api, "c0")[-2:]
    assert datetime.fromisoformat(a["completed_at"]) <= datetime.fromisoformat(b["started_at"])


def test_worker_killed_mid_backup(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "srv", env=ENV)
    server.start()
    try:
        with server.client(server.login()) as api:
            disk = create_disk(tmp_path / "k.qcow2")
            api.post("/api/v1/sources", json={"name": "k", "kind": "qcow2", "path": str(disk)})
            job = api.post("/api/v1/backup/start", json={"vm_name": "k"}).json()
            assert wait_for(api, job["id"], {"succeeded", "failed"})["status"] == "succeeded"
            write_random(disk, "qcow2", 0.3, seed=3)
            body = {"vm_name": "k", "speed": 2 * MiB}
            slow = api.post("/api/v1/backup/start", json=body).json()
            deadline = time.monotonic() + 60
            while api.get(f"/api/v1/jobs/{slow['id']}").json()["bytes_done"] == 0:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        server.kill()
        directory = tmp_path / "srv" / "backups" / "k" / "disk-0"
        assert any(p.name.endswith(".partial") for p in directory.iterdir())
        server.start()
        with server.client(server.login()) as api:
            killed = api.get(f"/api/v1/jobs/{slow['id']}").json()
            assert killed["status"] == "failed"
            assert not any(p.name.endswith(".partial") for p in directory.iterdir())
            full, broken = points(api, "k")
            assert broken["status"] == "failed"
            nxt = api.post("/api/v1/backup/start", json={"vm_name": "k"}).json()
            assert wait_for(api, nxt["id"], {"succeeded", "failed"})["status"] == "succeeded"
            new = points(api, "k")[-1]
            assert new["backup_type"] == "incremental" and new["parent_backup_id"] == full["id"]
            assert same(tmp_path / "srv" / "backups" / new["path"], disk)
    finally:
        server.stop()


def test_policy_run_applies_retention(
    srv: ServerProcess, api: httpx.Client, tmp_path: Path
) -> None:
    disk = create_disk(tmp_path / "p.qcow2", size=16 * MiB)
    api.post("/api/v1/sources", json={"name": "pol", "kind": "qcow2", "path": str(disk)})
    body = {"name": "keep2", "sources": ["pol"], "keep_last": 2, "max_chain_length": 5}
    assert api.post("/api/v1/policies", json=body).status_code == 201
    for n in range(3):
        (job_id,) = api.post("/api/v1/policies/keep2/run").json()["job_ids"]
        job = wait_for(api, job_id, {"succeeded", "failed"})
        assert job["status"] == "succeeded", job["error"]
        write_random(disk, "qcow2", 0.05, seed=n, size=16 * MiB)
    assert [d["reason"] for d in job["result"]["prune"][0]["keep"]] == [
        "keep-last 1/2",
        "keep-last 2/2",
    ]
    kept = points(api, "pol")
    assert len(kept) == 2 and kept[0]["backup_type"] == "full"
    assert kept[1]["parent_backup_id"] == kept[0]["id"]


def test_policy_cli_previews_and_asks_before_removing(
    srv: ServerProcess, api: httpx.Client, tmp_path: Path
) -> None:
    """Issue 17: a policy's first run merged hand-made points with no preview or question."""
    disk = create_disk(tmp_path / "h.qcow2", size=16 * MiB)
    api.post("/api/v1/sources", json={"name": "hand", "kind": "qcow2", "path": str(disk)})
    for n in range(2):
        job = api.post("/api/v1/backup/start", json={"vm_name": "hand"}).json()
        assert wait_for(api, job["id"], {"succeeded", "failed"})["status"] == "succeeded"
        write_random(disk, "qcow2", 0.05, seed=n, size=16 * MiB)
    add = ["backup", "policy", "add"]
    own = cli(srv, api, tmp_path, *add, "mine", "--source", "hand", "--keep-last", "1")
    assert own.returncode == 0, own.stderr
    assert "remove 0" in own.stdout and "not made by this policy" in own.stdout
    adopt = [*add, "adopter", "--source", "hand", "--keep-last", "1", "--adopt-existing"]
    asked = cli(srv, api, tmp_path, *adopt, stdin="n\n")
    assert asked.returncode == 1 and "remove 1" in asked.stdout, asked.stdout + asked.stderr
    assert api.get("/api/v1/policies/adopter").status_code == 404
    assert cli(srv, api, tmp_path, *adopt, "--yes").returncode == 0
    history = api.get("/api/v1/policies/adopter/history").json()
    assert len(history[0]["preview"]["remove"]) == 1
    run = cli(srv, api, tmp_path, "backup", "policy", "run", "adopter", stdin="n\n")
    assert run.returncode == 1 and "first run" in run.stdout, run.stdout + run.stderr
    assert len(points(api, "hand")) == 2
