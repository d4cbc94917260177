"""Organizer end to end on a real server: scan, plan, apply, rollback, dedupe, CLI."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from support.http import assert_problem
from support.organizer_trees import (
    build_messy_tree,
    items,
    put,
    run_op,
    snapshot,
    start_op,
    wait_op,
)
from support.server import BIN, ServerProcess
from support.tmpfs import mounted_tmpfs

RULES = """
rules:
  - name: images
    match: {category: [disk-image, iso]}
    action: move
    destination: "sorted/{category}/{format}/{name}"
  - name: archives
    match: {category: archive, min_size: 1}
    action: copy
    destination: "archives/{ext}/{name}"
    on_conflict: skip
  - name: junk
    match: {name: "*.txt", path: "copies/*"}
    action: delete
"""


@pytest.fixture(scope="module")
def shares(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("shares")


@pytest.fixture(scope="module")
def org_server(tmp_path_factory: pytest.TempPathFactory, shares: Path) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("organizer-server")
    imports = data / "images" / "imports"  # the image library accepts the organizer's copies
    imports.mkdir(parents=True)
    env = {
        "DISKVAULT_ORGANIZER_ROOTS": json.dumps([shares.as_uri()]),
        "DISKVAULT_IMPORT_ROOTS": json.dumps([str(imports)]),
    }
    proc = ServerProcess(data, env=env)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def client(org_server: ServerProcess) -> Iterator[httpx.Client]:
    with org_server.client(org_server.login()) as c:
        yield c


def test_scan_records_every_file_with_its_category(
    org_server: ServerProcess, client: httpx.Client, shares: Path
) -> None:
    root = shares / "scan"
    expected = build_messy_tree(root)
    op = start_op(client, type="scan", location=root.as_uri())
    assert op["status"] in ("queued", "running")

    token = client.headers["authorization"].split()[1]
    url = org_server.url.replace("http://", "ws://") + f"/ws/operations/{op['id']}?token={token}"
    with connect(url, open_timeout=10) as ws:
        messages = [json.loads(m) for m in ws]
    assert messages[-1]["type"] == "completed"

    done = wait_op(client, op["id"])
    assert done["summary"]["files"] == len(expected)
    found = {i["key"]: i for i in items(client, op["id"])}
    assert {k: v["category"] for k, v in found.items()} == expected
    assert found["vms/web.qcow2"]["format"] == "qcow2"
    assert found["vms/web.qcow2"]["virtual_size"] == 64 * 1024 * 1024
    assert found["old-disk.dat"]["format"] == "vmdk"
    assert found["backup.tar.gz"]["format"] == "gzip"
    assert found["notes.txt"]["size"] == os.path.getsize(root / "notes.txt")
    assert found["notes.txt"]["mtime"] == pytest.approx(os.path.getmtime(root / "notes.txt"))


def test_plan_touches_nothing_then_apply_and_rollback_restore_the_tree(
    client: httpx.Client, shares: Path
) -> None:
    root = shares / "plan"
    build_messy_tree(root)
    put(root / "archives" / "gz" / "backup.tar.gz", b"already here, different")
    before = snapshot(root)

    plan = run_op(client, type="plan", location=root.as_uri(), rules=RULES, dry_run=True)
    actions = items(client, plan["id"])
    assert snapshot(root) == before
    by_src = {a["src"]: a for a in actions}
    assert by_src["vms/web.qcow2"]["dst"] == "sorted/disk-image/qcow2/web.qcow2"
    assert by_src["isos/install.iso"]["dst"] == "sorted/iso/iso/install.iso"
    assert by_src["backup.tar.gz"]["dst"] is None  # skip: exists, never overwritten
    assert by_src["copies/notes-copy.txt"]["op"] == "trash"
    assert "notes.txt" not in by_src

    applied = run_op(client, type="apply", plan_id=plan["id"])
    assert applied["summary"]["done"] == len(actions) - 1
    assert applied["summary"]["skipped"] == 1
    after = snapshot(root)
    assert "vms/web.qcow2" not in after
    assert after["sorted/disk-image/qcow2/web.qcow2"] == before["vms/web.qcow2"]
    assert after["archives/gz/backup.tar.gz"] == before["archives/gz/backup.tar.gz"]
    assert after["archives/xz/logs.xz"] == before["logs.xz"]
    assert "copies/notes-copy.txt" not in after
    records = items(client, applied["id"])
    assert all(r["sha256"] for r in records if r["state"] == "done" and r["op"] != "mkdir")

    resp = client.post(f"/api/v1/operations/{applied['id']}/rollback")
    assert resp.status_code == 202, resp.text
    undo = wait_op(client, resp.json()["id"])
    assert undo["status"] == "succeeded", undo
    assert undo["summary"]["restored"] == len(actions) - 1
    assert snapshot(root) == before
    again = client.get(f"/api/v1/operations/{applied['id']}").json()
    assert again["rolled_back_by"] == undo["id"]


def test_rollback_reports_a_changed_file_and_restores_the_rest(
    client: httpx.Client, shares: Path
) -> None:
    root = shares / "changed"
    put(root / "a.txt", b"alpha")
    put(root / "b.txt", b"bravo")
    put(root / "c.txt", b"charlie")
    rules = [{"match": {"name": "*.txt"}, "action": "move", "destination": "moved/{name}"}]
    applied = run_op(client, type="apply", location=root.as_uri(), rules=rules)
    assert applied["summary"]["done"] == 3
    (root / "moved" / "b.txt").write_bytes(b"edited after the move")

    undo = wait_op(client, client.post(f"/api/v1/operations/{applied['id']}/rollback").json()["id"])
    assert undo["status"] == "succeeded"
    assert undo["summary"]["restored"] == 2 and undo["summary"]["changed"] == 1
    assert undo["summary"]["problems"][0]["key"] == "b.txt"
    assert (root / "a.txt").read_bytes() == b"alpha"
    assert (root / "c.txt").read_bytes() == b"charlie"
    assert (root / "moved" / "b.txt").read_bytes() == b"edited after the move"
    assert not (root / "b.txt").exists()
    records = {r["src"]: r for r in items(client, applied["id"])}
    assert records["b.txt"]["state"] == "rollback_failed"
    assert records["a.txt"]["state"] == "rolled_back"


@pytest.mark.parametrize("strategy", ["delete", "hardlink", "quarantine"])
def test_dedupe_keeps_one_copy_and_rolls_back(
    client: httpx.Client, shares: Path, strategy: str
) -> None:
    root = shares / f"dedupe-{strategy}"
    payload = os.urandom(200_000)
    original = put(root / "a" / "first.bin", payload)
    os.utime(original, (1_000_000, 1_000_000))  # the oldest: the one kept
    put(root / "b" / "second.bin", payload)
    put(root / "c" / "third.bin", payload)
    put(root / "unique.bin", os.urandom(200_000))
    before = snapshot(root)

    dupes = run_op(client, type="dupes", location=root.as_uri())
    assert dupes["summary"]["groups"] == 1
    assert dupes["summary"]["wasted_bytes"] == 2 * len(payload)
    assert dupes["summary"]["items"][0]["keys"] == ["a/first.bin", "b/second.bin", "c/third.bin"]

    done = run_op(client, type="dedupe", location=root.as_uri(), strategy=strategy, keep="oldest")
    assert done["summary"]["done"] == 2
    assert original.read_bytes() == payload
    inode = original.stat().st_ino
    for name in ("b/second.bin", "c/third.bin"):
        path = root / name
        if strategy == "delete":
            assert not path.exists()
        elif strategy == "hardlink":
            assert path.stat().st_ino == inode and path.read_bytes() == payload
        else:
            assert not path.exists()
            assert (root / ".diskvault-quarantine" / done["id"] / name).read_bytes() == payload

    undo = wait_op(client, client.post(f"/api/v1/operations/{done['id']}/rollback").json()["id"])
    assert undo["summary"]["restored"] == 2, undo
    assert snapshot(root) == before
    assert (root / "b" / "second.bin").stat().st_ino != inode


def test_bad_input_gets_clear_errors(client: httpx.Client, shares: Path, tmp_path: Path) -> None:
    outside = assert_problem(
        client.post("/api/v1/operations", json={"type": "scan", "location": tmp_path.as_uri()}),
        403,
    )
    assert "ORGANIZER_ROOTS" in outside["detail"]
    traversal = assert_problem(
        client.post(
            "/api/v1/operations",
            json={"type": "scan", "location": (shares / "x").as_uri() + "/../../etc"},
        ),
        400,
    )
    assert "'..'" in traversal["detail"]
    link = shares / "escape"
    if not link.exists():
        link.symlink_to("/etc")
    assert_problem(
        client.post("/api/v1/operations", json={"type": "scan", "location": link.as_uri()}), 403
    )
    bad_template = [{"match": {}, "action": "move", "destination": "../{name}"}]
    body = {"type": "plan", "location": shares.as_uri(), "rules": bad_template}
    assert "'..'" in assert_problem(client.post("/api/v1/operations", json=body), 400)["detail"]
    body["rules"] = "rules: [{action: explode}]"
    assert_problem(client.post("/api/v1/operations", json=body), 400)
    not_a_plan = start_op(client, type="scan", location=shares.as_uri())
    wait_op(client, not_a_plan["id"])
    assert_problem(
        client.post("/api/v1/operations", json={"type": "apply", "plan_id": not_a_plan["id"]}),
        409,
    )
    assert_problem(client.post(f"/api/v1/operations/{not_a_plan['id']}/rollback"), 409)
    assert_problem(client.get("/api/v1/operations/nope"), 404)


def test_cli_scan_plan_apply_rollback(
    org_server: ServerProcess, client: httpx.Client, shares: Path, tmp_path: Path
) -> None:
    root = shares / "cli"
    build_messy_tree(root)
    before = snapshot(root)
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    env = {
        **os.environ,
        "DISKVAULT_URL": org_server.url,
        "DISKVAULT_TOKEN": client.headers["authorization"].split()[1],
        "COLUMNS": "200",
    }

    def cli(*args: str) -> str:
        result = subprocess.run(
            [str(BIN), "organize", *args], env=env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    assert "web.qcow2" in cli("scan", root.as_uri(), "--wait")
    out = cli("plan", str(rules), "--location", root.as_uri(), "--dry-run")
    assert "sorted/disk-image/qcow2/web.qcow2" in out and snapshot(root) == before
    plan_id = out.rsplit("diskvault organize apply ", 1)[1].split()[0]
    assert "done" in cli("apply", plan_id[:10])
    assert snapshot(root) != before
    applied = client.get("/api/v1/operations", params={"type": "apply", "limit": 1}).json()
    cli("rollback", applied["items"][0]["id"])
    assert snapshot(root) == before
    assert "rollback" in cli("list")
    assert "second" not in cli("dupes", "--location", root.as_uri())


@pytest.fixture
def small_tmpfs(shares: Path) -> Iterator[Path]:
    with mounted_tmpfs(shares / "full-destination", "4m") as mnt:
        yield mnt


def test_full_destination_stops_cleanly_and_rolls_back(
    client: httpx.Client, shares: Path, small_tmpfs: Path
) -> None:
    root = shares / "to-full"
    for i in range(8):
        put(root / f"img{i}.bin", os.urandom(1024 * 1024))
    before = snapshot(root)
    rules = [{"match": {}, "action": "move", "destination": "{name}"}]
    body = {"location": root.as_uri(), "destination": small_tmpfs.as_uri(), "rules": rules}

    op = wait_op(client, start_op(client, type="apply", **body)["id"])
    assert op["status"] == "failed"
    assert "apply stopped" in op["error"] and "no space left" in op["error"]
    records = items(client, op["id"])
    states = [r["state"] for r in records]
    assert states.count("failed") == 1 and states[-1] == "failed"
    assert 1 <= states.count("done") < 8
    moved = {r["src"] for r in records if r["state"] == "done"}
    assert {p.name for p in small_tmpfs.iterdir() if p.is_file()} == moved
    assert not [p for p in small_tmpfs.iterdir() if p.name.endswith(".partial")]
    assert set(snapshot(root)) == set(before) - moved

    undo = wait_op(client, client.post(f"/api/v1/operations/{op['id']}/rollback").json()["id"])
    assert undo["status"] == "succeeded", undo
    assert undo["summary"]["restored"] == len(moved)
    assert snapshot(root) == before
    assert not [p for p in small_tmpfs.iterdir() if p.is_file()]


def test_import_copies_images_into_the_library(
    org_server: ServerProcess, client: httpx.Client, shares: Path
) -> None:
    root = shares / "import"
    build_messy_tree(root)
    op = run_op(client, type="import", location=root.as_uri())
    assert op["summary"]["done"] == 4  # qcow2, vmdk, raw disk, iso
    assert op["summary"]["errors"] == []
    assert len(op["summary"]["imported"]) == 4
    copied = org_server.data_dir / "images" / "imports" / "vms" / "web.qcow2"
    assert copied.read_bytes() == (root / "vms" / "web.qcow2").read_bytes()
    for image_id in op["summary"]["imported"]:
        image = client.get(f"/api/v1/images/{image_id}")
        assert image.status_code == 200, image.text
