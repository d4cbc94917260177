"""File-level restore against a real ``diskvault serve``: backups made through the
API, the CLI, concurrent HTTP mounts, a crash with mounts up, and busy points."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from diskvault.tools import mount as mount_tool
from support.jobs import wait_for
from support.restore_disks import (
    MiB,
    ext4_image,
    fat_image,
    gpt_disk,
    index_php,
    make_big,
    rewrite_ext4_file,
    root_tree,
    sha256,
)
from support.server import ServerProcess

pytestmark = pytest.mark.skipif(
    not (mount_tool.loop_available() and mount_tool.fuse_available()),
    reason="needs loop devices and FUSE",
)
BIN = str(Path(sys.executable).parent / "diskvault")


@dataclass
class Site:
    srv: ServerProcess
    api: httpx.Client
    points: list[str]
    big_sha: str

    @property
    def mount_root(self) -> Path:
        return self.srv.data_dir / "mounts"


def start_backup(api: httpx.Client, kind: str) -> str:
    job = api.post("/api/v1/backup/start", json={"vm_name": "web", "backup_type": kind})
    assert job.status_code == 202, job.text
    done = wait_for(api, job.json()["id"], {"succeeded", "failed"}, timeout=120)
    assert done["status"] == "succeeded", done
    (point,) = done["result"]["backup_ids"]
    return str(point)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("restore-e2e")
    work = root / "work"
    (work / "fat").mkdir(parents=True)
    big = make_big(work / "big.bin", 8 * MiB)
    disk = gpt_disk(
        root / "web.raw",
        {
            "ext4": ext4_image(work / "ext4.img", root_tree(work / "tree", big, 1), 24 * MiB),
            "fat": fat_image(work / "fat.img", work / "fat", 1),
        },
    )
    srv = ServerProcess(root / "data", env={"DISKVAULT_WORKERS": "2"})
    srv.start()
    try:
        with srv.client(srv.login()) as api:
            body = {"name": "web", "kind": "raw", "path": str(disk.path)}
            assert api.post("/api/v1/sources", json=body).status_code == 201
            points = [start_backup(api, "full")]
            rewrite_ext4_file(disk, "ext4", "var/www/index.php", index_php(2))
            points.append(start_backup(api, "incremental"))
            yield Site(srv, api, points, sha256(big))
    finally:
        srv.stop()


def running(pid: int) -> bool:
    """Alive and not a zombie waiting for init to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def cli(site: Site, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DISKVAULT_URL": site.srv.url,
        "DISKVAULT_TOKEN": site.api.headers["authorization"].split()[1],
        "XDG_CONFIG_HOME": str(tmp),
        "COLUMNS": "200",
    }
    return subprocess.run([BIN, *args], env=env, capture_output=True, text=True, timeout=120)


def mount(site: Site, point: str) -> dict[str, Any]:
    resp = site.api.post("/api/v1/restore/mount", json={"backup_id": point})
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    return body


def fetch(site: Site, mount_id: str, path: str) -> httpx.Response:
    return site.api.get(f"/api/v1/restore/{mount_id}/download", params={"path": path})


def active(site: Site) -> set[str]:
    return {m["mount_id"] for m in site.api.get("/api/v1/restore").json()["items"]}


def test_cli_mount_ls_extract_umount(site: Site, tmp_path: Path) -> None:
    first, last = site.points
    made = cli(site, tmp_path, "restore", "mount", "--backup-id", first)
    assert made.returncode == 0, made.stderr
    found = re.search(r"mount ([0-9a-f]{32}) of restore point", made.stdout)
    assert found and "ext4" in made.stdout and "vfat" in made.stdout, made.stdout
    mount_id = found.group(1)
    listed = cli(site, tmp_path, "restore", "ls", mount_id, "/var/www")
    assert listed.returncode == 0 and "index.php" in listed.stdout and "html" in listed.stdout
    links = cli(site, tmp_path, "restore", "ls", mount_id, "/")
    assert "passwd-link -> /etc/passwd" in links.stdout
    out = tmp_path / "index-1.php"
    got = cli(
        site, tmp_path, "restore", "extract", "--mount", mount_id,
        "--file", "/var/www/index.php", "--output", str(out),
    )  # fmt: skip
    assert got.returncode == 0, got.stderr
    assert out.read_text() == index_php(1)
    tar_out = tmp_path / "var.tar"
    got = cli(
        site, tmp_path, "restore", "extract", "--mount", mount_id, "--file", "/var",
        "--output", str(tar_out),
    )  # fmt: skip
    assert got.returncode == 0, got.stderr
    with tarfile.open(tar_out) as tar:
        member = tar.extractfile("var/www/index.php")
        assert member is not None and member.read().decode() == index_php(1)
    # No mount given: mount, extract, unmount.
    into = tmp_path / "into"
    into.mkdir()
    before = active(site)
    got = cli(
        site, tmp_path, "restore", "extract", "--backup-id", last,
        "--file", "/big.bin", "--output", str(into),
    )  # fmt: skip
    assert got.returncode == 0, got.stderr
    assert sha256(into / "big.bin") == site.big_sha and not list(into.glob("*.partial"))
    assert active(site) == before
    gone = cli(site, tmp_path, "restore", "umount", mount_id)
    assert gone.returncode == 0 and f"mount {mount_id} unmounted" in gone.stdout
    bad = cli(site, tmp_path, "restore", "ls", mount_id, "/")
    assert bad.returncode == 4 and "mount the restore point again" in bad.stderr
    assert "Traceback" not in bad.stderr
    escape = cli(site, tmp_path, "restore", "extract", "--backup-id", last, "--file", "../x",
                 "--output", str(tmp_path / "x"))  # fmt: skip
    assert escape.returncode == 2 and "not allowed" in escape.stderr


def test_many_concurrent_mounts_are_independent(site: Site) -> None:
    first, last = site.points
    wanted = [first, last, last, first, last, first]
    with ThreadPoolExecutor(len(wanted)) as pool:
        bodies = list(pool.map(lambda p: mount(site, p), wanted))
    ids = [b["mount_id"] for b in bodies]
    try:
        assert len(set(ids)) == 6 and set(ids) <= active(site)
        with ThreadPoolExecutor(len(ids)) as pool:
            texts = list(pool.map(lambda m: fetch(site, m, "/var/www/index.php").text, ids))
        assert texts == [index_php(1 if p == first else 2) for p in wanted]
        assert site.api.delete(f"/api/v1/restore/{ids[1]}").json()["status"] == "unmounted"
        assert fetch(site, ids[2], "/var/www/index.php").text == index_php(2)
        assert sha256(fetch(site, ids[4], "/big.bin").content) == site.big_sha
    finally:
        for mount_id in ids:
            site.api.delete(f"/api/v1/restore/{mount_id}")
    assert not set(ids) & active(site)
    assert not mount_tool.list_mounts(site.mount_root)


def test_crash_leftovers_are_cleaned_at_start_up(site: Site) -> None:
    body = mount(site, site.points[-1])
    workdir = site.mount_root / body["mount_id"][:12]
    qsd_pid = int((workdir / "qsd.pid").read_text())
    loops = [d.name for d in mount_tool.list_loop_devices(workdir / "disk")]
    site.srv.kill()
    # The kernel's mounts and loop devices outlive the crash; the QSD dies with its
    # server (PR_SET_PDEATHSIG), which takes its FUSE export "disk" along.
    assert {"p1", "p2"} <= {m.mountpoint.name for m in mount_tool.list_mounts(workdir)}
    assert loops
    deadline = time.monotonic() + 5
    while running(qsd_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running(qsd_pid)
    site.srv.start()
    assert not mount_tool.list_mounts(site.mount_root)
    assert not mount_tool.list_loop_devices(workdir / "disk")
    assert not {d.name for d in mount_tool.list_loop_devices()} & set(loops)
    assert not running(qsd_pid) and not workdir.exists()
    after = site.api.get(f"/api/v1/restore/{body['mount_id']}").json()
    assert after["status"] == "unmounted" and "start-up" in after["reason"]
    assert fetch(site, mount(site, site.points[-1])["mount_id"], "/etc/hostname").text == "guest\n"


def test_mounted_point_cannot_be_deleted_until_unmounted(site: Site) -> None:
    for mount_id in active(site):
        site.api.delete(f"/api/v1/restore/{mount_id}")
    first, last = site.points
    mount_id = mount(site, first)["mount_id"]
    refused = site.api.delete(f"/api/v1/backup/{first}")
    assert refused.status_code == 409 and mount_id in refused.json()["detail"]
    assert site.api.delete(f"/api/v1/restore/{mount_id}").status_code == 200
    job = site.api.delete(f"/api/v1/backup/{first}")
    assert job.status_code == 202, job.text
    assert wait_for(site.api, job.json()["id"], {"succeeded", "failed"})["status"] == "succeeded"
    merged = mount(site, last)["mount_id"]  # the first point was merged into it
    assert fetch(site, merged, "/var/www/index.php").text == index_php(2)
    site.api.delete(f"/api/v1/restore/{merged}")
