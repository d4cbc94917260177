"""Issue 17 points 1-2 through the real CLI and a real server (with its own tgtd):
every id a list prints is accepted back by the matching show; --json and -q on every
list and show; ids, IQNs and paths whole at 80 and 200 columns."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from diskvault.tools import qemu_img
from support.backups_env import create_disk
from support.boot_env import cleanup_layers, tgtd_env
from support.images_util import upload, wait_image
from support.jobs import wait_for
from support.server import ServerProcess
from support.targets_tgtd import kill_tgtd, tgtd_pid

CLI = str(Path(sys.executable).parent / "diskvault")
MiB = 1024 * 1024
HEX_ID = re.compile(r"(?<![0-9a-f])[0-9a-f]{8,32}(?![0-9a-f])")

# (list command, show command, column of ids the list prints)
WALK = [
    (["image", "list"], ["image", "show"]),
    (["jobs", "list", "--limit", "100"], ["jobs", "show"]),
    (["target", "list"], ["target", "show"]),
    (["target", "list"], ["target", "status"]),
    (["machine", "list"], ["machine", "show"]),
    (["backup", "list"], ["backup", "show"]),
    (["backup", "chain", "--vm", "vm1"], ["backup", "show"]),
    (["source", "list"], ["source", "show"]),
    (["backup", "repo", "list"], ["backup", "repo", "show"]),
    (["backup", "policy", "list"], ["backup", "policy", "show"]),
    (["organize", "list"], ["organize", "show"]),
    (["recovery", "list"], ["recovery", "show"]),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str, Path]]:
    tmp = tmp_path_factory.mktemp("cli-ids")
    share = tmp / "share"
    share.mkdir()
    (share / "notes.txt").write_text("hello")
    env = {**tgtd_env(), "DISKVAULT_ORGANIZER_ROOTS": json.dumps([str(share)])}
    server = ServerProcess(tmp / "srv", env=env)
    server.start()
    try:
        token = server.login()
        with server.client(token) as api:
            raw = tmp / "golden.raw"
            qemu_img.create(raw, "raw", 4 * MiB)
            image_id = upload(api, raw).json()["id"]
            wait_image(api, image_id, {"READY"})
            for path, body in (
                ("/api/v1/targets", {"image_id": image_id}),
                ("/api/v1/machines", {"name": "pc-01", "mac": "52:54:00:aa:bb:01",
                                      "image_id": image_id}),
                ("/api/v1/sources", {"name": "vm1", "kind": "qcow2",
                                     "path": str(create_disk(tmp / "vm1.qcow2", size=MiB))}),
                ("/api/v1/policies", {"name": "nightly", "sources": ["vm1"], "keep_last": 3}),
            ):  # fmt: skip
                resp = api.post(path, json=body)
                assert resp.status_code == 201, resp.text
            for kind in ("full", "incremental"):
                body = {"vm_name": "vm1", "backup_type": kind}
                job = wait_for(api, api.post("/api/v1/backup/start", json=body).json()["id"],
                               {"succeeded", "failed"})  # fmt: skip
                assert job["status"] == "succeeded", job
            point = job["result"]["backup_ids"][0]
            resp = api.post(f"/api/v1/backup/{point}/boot", json={"mac": "52:54:00:aa:bb:02"})
            assert resp.status_code == 201, resp.text
            scan = api.post("/api/v1/operations", json={"type": "scan", "location": str(share)})
            assert (
                wait_for(api, scan.json()["id"], {"succeeded", "failed"})["status"] == "succeeded"
            )
        yield server, token, tmp
    finally:
        server.stop()
        cleanup_layers(tmp / "srv" / "writebacks")
        port = int(env["DISKVAULT_TGT_CONTROL_PORT"])
        if tgtd_pid(port) is not None:
            kill_tgtd(port)


def _cli(
    world: tuple[ServerProcess, str, Path], *args: str, columns: int = 200
) -> CompletedProcess[str]:
    server, token, tmp = world
    env = {**os.environ, "DISKVAULT_URL": server.url, "DISKVAULT_TOKEN": token,
           "XDG_CONFIG_HOME": str(tmp), "COLUMNS": str(columns)}  # fmt: skip
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=60)


def _ok(world: tuple[ServerProcess, str, Path], *args: str, columns: int = 200) -> str:
    out = _cli(world, *args, columns=columns)
    assert out.returncode == 0, (args, out.stderr, out.stdout)
    return out.stdout


@pytest.mark.parametrize(("listing", "show"), WALK, ids=[" ".join(w[1]) for w in WALK])
def test_every_printed_id_is_accepted_back(
    world: tuple[ServerProcess, str, Path], listing: list[str], show: list[str]
) -> None:
    full = _ok(world, *listing, "-q").split()
    assert full, listing
    page = json.loads(_ok(world, *listing, "--json"))
    if "items" in page:
        assert {i.get("id") for i in page["items"]} >= set(full) or listing[1] == "chain"
    for columns in (80, 200):
        table = _ok(world, *listing, columns=columns)
        shown = {m for m in HEX_ID.findall(table) if any(f.startswith(m) for f in full)}
        # Every id is printed whole (at least 8 characters, never cut by the width).
        assert {next(f for f in full if f.startswith(s)) for s in shown} == set(full), table
        for short in shown:
            assert len(short) >= 8
            got = json.loads(_ok(world, *show, short, "--json"))
            assert got.get("id", got.get("mount_id", "")).startswith(short)
            assert _ok(world, *show, short, "-q").strip() in full


def test_names_prefixes_and_errors(world: tuple[ServerProcess, str, Path]) -> None:
    image = json.loads(_ok(world, "image", "list", "--json"))["items"][0]
    assert json.loads(_ok(world, "image", "show", image["name"], "--json"))["id"] == image["id"]
    assert _ok(world, "image", "show", image["id"][:4], "-q").strip() == image["id"]
    target = json.loads(_ok(world, "target", "list", "--json"))["items"][0]
    assert _ok(world, "target", "show", target["iqn"], "-q").strip() == target["id"]
    machine = json.loads(_ok(world, "machine", "show", "52:54:00:aa:bb:01", "--json"))
    assert machine["name"] == "pc-01"
    short = _cli(world, "image", "show", image["id"][:3])
    assert short.returncode == 2 and "at least 4" in short.stderr
    missing = _cli(world, "image", "show", "feedfeedfeed", "--json")
    assert missing.returncode == 4
    assert json.loads(missing.stdout)["status"] == 404  # the problem+json body, same code


def test_tables_keep_iqns_and_paths_whole_at_80_columns(
    world: tuple[ServerProcess, str, Path],
) -> None:
    narrow = _ok(world, "target", "list", columns=80)
    for target in json.loads(_ok(world, "target", "list", "--json"))["items"]:
        assert target["iqn"] in narrow and (target["image_id"] or target["path"]) in narrow
    repo = json.loads(_ok(world, "backup", "repo", "list", "--json"))["items"][0]
    assert repo["path"] in _ok(world, "backup", "repo", "list", columns=80)
