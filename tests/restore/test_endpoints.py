"""The restore API in-process: mount, list, path safety, bad input, busy points."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from diskvault.restore.models import RestoreMount
from support.http import assert_problem
from support.restore_disks import (
    GUEST_PASSWD,
    UNICODE_DIR,
    UNICODE_FILE,
    index_php,
    note_txt,
    tar_members,
)
from support.restore_world import World
from support.server import ADMIN_PASSWORD


def files(api: TestClient, mount_id: str, path: str, **params: Any) -> Any:
    return api.get(f"/api/v1/restore/{mount_id}/files", params={"path": path, **params})


def fetch(api: TestClient, mount_id: str, path: str, **params: Any) -> Any:
    return api.get(f"/api/v1/restore/{mount_id}/download", params={"path": path, **params})


KNOWN = {
    1: "deep/a/b/c/d/e/leaf.txt",
    2: "docs/nested/deeper/leaf.txt",
    3: "docs/nested/deeper/leaf.txt",
    4: "DOCS/REPORT.TXT",
    5: "docs/nested/deeper/leaf.txt",
}


def test_points_1_and_n_each_show_their_version_and_nothing_is_written(
    world: World, api: TestClient
) -> None:
    first, last = world.gpt_points[0], world.gpt_points[-1]
    made = [api.post("/api/v1/restore/mount", json={"backup_id": b}) for b in (first, last)]
    assert [r.status_code for r in made] == [201, 201], made[0].text
    bodies = [r.json() for r in made]
    for body, point in zip(bodies, (first, last), strict=True):
        assert body["backup_id"] == point and body["status"] == "mounted"
        assert body["expires_at"] > body["created_at"]
        parts = {p["index"]: p for p in body["partitions"]}
        assert set(parts[1]) >= {"index", "fstype", "size", "label", "mounted", "reason"}
        assert parts[1]["size"] == world.gpt.parts["ext4"].size
        assert [i for i, p in parts.items() if p["mounted"]] == [1, 2, 3, 4, 5]
        for index, known in KNOWN.items():  # the spec's server-side mount_path, read-only
            where = Path(parts[index]["mount_path"])
            assert (where / known).is_file() and os.statvfs(where).f_flag & os.ST_RDONLY
    (one, n) = (b["mount_id"] for b in bodies)
    assert fetch(api, one, "/var/www/index.php").text == index_php(1)
    assert fetch(api, n, "/var/www/index.php").text == index_php(3)
    assert fetch(api, one, "/NOTE.TXT", partition=4).text == note_txt(1)
    assert fetch(api, n, "/NOTE.TXT", partition=4).text == note_txt(3)
    for mount_id in (one, n):
        for partition, known in KNOWN.items():  # read everything once
            whole = fetch(api, mount_id, "/", partition=partition)
            assert f"partition-{partition}/{known}" in tar_members(whole.content)
        gone = api.delete(f"/api/v1/restore/{mount_id}")
        assert gone.status_code == 200 and gone.json()["status"] == "unmounted"
    assert world.current_sums() == world.chain_sums


def test_listing_is_complete_sorted_and_paginated(api: TestClient, gpt_mount: str) -> None:
    page = files(api, gpt_mount, "/").json()
    assert page["partition"] == 1 and page["path"] == "/"
    entries = {e["name"]: e for e in page["items"]}
    assert page["total"] == len(entries) == 15
    names = [e["name"] for e in page["items"]]
    dirs = [e["name"] for e in page["items"] if e["type"] == "dir"]
    assert names[: len(dirs)] == sorted(dirs) and UNICODE_DIR in dirs
    assert entries["passwd-link"] == {
        **entries["passwd-link"],
        "type": "symlink",
        "target": "/etc/passwd",
        "mode": "0777",
    }
    assert entries["escape-link"]["target"] == "../../../../../../../etc/passwd"
    assert entries["big.bin"]["type"] == "file" and entries["big.bin"]["size"] == 100 * 1024**2
    assert entries["big.bin"]["target"] is None and entries["pipe"]["type"] == "fifo"
    tool = files(api, gpt_mount, "/bin").json()["items"][0]
    assert (tool["name"], tool["mode"], tool["size"]) == ("tool.sh", "0755", 20)
    assert tool["mtime"].endswith(("Z", "+00:00"))
    pages = [files(api, gpt_mount, "/", limit=5, offset=o).json() for o in range(0, 20, 5)]
    assert [e["name"] for p in pages for e in p["items"]] == names
    assert {p["total"] for p in pages} == {15}
    nested = files(api, gpt_mount, f"/{UNICODE_DIR}").json()["items"]
    assert [e["name"] for e in nested] == [UNICODE_FILE]
    through_link = files(api, gpt_mount, "/www").json()["items"]  # guest dir symlink
    assert {e["name"] for e in through_link} == {"html", "index.php"}


def test_partition_choice(api: TestClient, gpt_mount: str) -> None:
    # Not on the ext4 root: the first mounted partition holding the path is used.
    docs = files(api, gpt_mount, "/docs").json()
    assert docs["partition"] == 2 and {e["name"] for e in docs["items"]} == {"nested", "report.txt"}
    assert fetch(api, gpt_mount, "/docs/report.txt", partition=3).text == "btrfs report\n" * 20
    fat = files(api, gpt_mount, "/", partition=4).json()["items"]
    assert {e["name"] for e in fat} >= {"DOCS", "NOTE.TXT"}  # fusefat adds the volume label
    body = assert_problem(files(api, gpt_mount, "/", partition=6), 409)
    assert "LUKS" in body["detail"]
    body = assert_problem(files(api, gpt_mount, "/", partition=42), 404)
    assert "1, 2, 3, 4, 5, 6, 7, 8" in body["detail"]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/passwd-link", GUEST_PASSWD),  # absolute guest link: the guest's /etc/passwd
        ("/escape-link", GUEST_PASSWD),  # ../../.. stops at the partition root
        ("/www/index.php", index_php(3)),
        ("/rel-link", index_php(3)),
        ("etc//./passwd", GUEST_PASSWD),
    ],
)
def test_symlinks_stay_inside_the_partition(
    api: TestClient, gpt_mount: str, path: str, expected: str
) -> None:
    resp = fetch(api, gpt_mount, path, partition=1)
    assert resp.status_code == 200 and resp.text == expected
    assert Path("/etc/passwd").read_text() != expected


@pytest.mark.parametrize("path", ["/shadow-link", "/dangling", "/nope", "/etc/passwd/x"])
def test_host_only_and_missing_paths_are_404(api: TestClient, gpt_mount: str, path: str) -> None:
    assert Path("/etc/shadow").exists()
    assert_problem(fetch(api, gpt_mount, path, partition=1), 404)


@pytest.mark.parametrize("path", ["../../../etc/passwd", "/var/../../etc", "/.."])
def test_dotdot_paths_are_400(api: TestClient, gpt_mount: str, path: str) -> None:
    assert "not allowed" in assert_problem(fetch(api, gpt_mount, path), 400)["detail"]
    assert_problem(files(api, gpt_mount, path), 400)


def test_a_nul_in_a_path_is_422_like_every_field(api: TestClient, gpt_mount: str) -> None:
    for resp in (fetch(api, gpt_mount, "a/\x00"), files(api, gpt_mount, "a/\x00")):
        assert "path: must not contain a NUL byte" in assert_problem(resp, 422)["detail"]


def test_wrong_kinds_are_400(api: TestClient, gpt_mount: str) -> None:
    assert "fifo" in assert_problem(fetch(api, gpt_mount, "/pipe"), 400)["detail"]
    assert "not a directory" in assert_problem(files(api, gpt_mount, "/etc/passwd"), 400)["detail"]


def test_unknown_ids_and_ended_mounts(world: World, api: TestClient) -> None:
    assert (
        "restore point"
        in assert_problem(api.post("/api/v1/restore/mount", json={"backup_id": "f" * 32}), 404)[
            "detail"
        ]
    )
    for resp in (
        files(api, "nope", "/"),
        fetch(api, "nope", "/x"),
        api.delete("/api/v1/restore/nope"),
        api.get("/api/v1/restore/nope"),
    ):
        assert_problem(resp, 404)
    mount_id = api.post("/api/v1/restore/mount", json={"backup_id": world.flat_points[0]}).json()[
        "mount_id"
    ]
    assert fetch(api, mount_id, "/version.txt").text == "flat version 1\n"
    assert api.delete(f"/api/v1/restore/{mount_id}").status_code == 200
    body = assert_problem(files(api, mount_id, "/"), 404)
    assert "unmounted" in body["detail"] and world.flat_points[0] in body["detail"]
    listed = api.get("/api/v1/restore", params={"all": True}).json()["items"]
    assert mount_id in {m["mount_id"] for m in listed}
    active = api.get("/api/v1/restore").json()["items"]
    assert mount_id not in {m["mount_id"] for m in active}


def test_mounted_point_and_its_ancestors_cannot_be_deleted(
    world: World, api: TestClient, gpt_mount: str
) -> None:
    assert api.get(f"/api/v1/restore/{gpt_mount}").json()["status"] == "mounted"
    for point in (world.gpt_points[-1], world.gpt_points[0]):  # the first merges into it
        body = assert_problem(api.delete(f"/api/v1/backup/{point}"), 409)
        assert f"mounted by restore mount {gpt_mount}" in body["detail"]


def test_access_extends_the_idle_timeout(world: World, api: TestClient, gpt_mount: str) -> None:
    before = api.get(f"/api/v1/restore/{gpt_mount}").json()["expires_at"]
    files(api, gpt_mount, "/")
    after = api.get(f"/api/v1/restore/{gpt_mount}").json()
    assert after["expires_at"] > before


NO_DEVICE_SCRIPT = """
import json, sys
from fastapi.testclient import TestClient
from diskvault.api.app import create_app
from diskvault.config import load_settings
settings = load_settings(DATA_DIR=sys.argv[1], WORKERS=0, ADMIN_PASSWORD=sys.argv[2])
with TestClient(create_app(settings)) as c:
    login = {"username": "admin", "password": sys.argv[2]}
    token = c.post("/api/v1/auth/login", json=login).json()["access_token"]
    r = c.post("/api/v1/restore/mount", json={"backup_id": "x" * 32},
               headers={"Authorization": "Bearer " + token})
    print("RESULT", json.dumps({"status": r.status_code, "body": r.json()}))
"""


@pytest.mark.parametrize(
    ("devices", "missing"), [("fuse c 10 229", "loop devices"), ("loop-control c 10 237", "FUSE")]
)
def test_503_names_what_is_missing(tmp_path: Path, devices: str, missing: str) -> None:
    """In a mount namespace whose /dev lacks loop-control (or fuse)."""
    name, kind, major, minor = devices.split()
    setup = (
        "mount -t tmpfs tmpfs /dev && mknod -m 666 /dev/null c 1 3 && "
        f'mknod -m 666 /dev/{name} {kind} {major} {minor} && exec "$0" -c "$1" "$2" "$3"'
    )
    out = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            setup,
            sys.executable,
            NO_DEVICE_SCRIPT,
            str(tmp_path / "data"),
            ADMIN_PASSWORD,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    (line,) = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    result = json.loads(line.removeprefix("RESULT "))
    assert result["status"] == 503
    assert result["body"]["detail"].startswith(f"{missing} is not available on this host")


def test_row_records_what_it_owns(world: World, api: TestClient, gpt_mount: str) -> None:
    from diskvault.db.engine import session_scope

    with session_scope(world.settings.DATABASE_URL) as s:
        row = s.get(RestoreMount, gpt_mount)
        assert row is not None and row.node == world.settings.NODE and row.owner == "admin"
        assert len(row.loop_devices) == 9 and row.qsd_pid
        assert Path(row.workdir).parent == world.settings.mount_root.resolve()
