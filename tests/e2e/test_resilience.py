"""Issue 14: no tool outlives its job, a clean stop loses nothing, progress is on time.

Real ``diskvault serve`` processes, real qemu-img (slowed with its own ``-r``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect

from diskvault.tools import children, qemu_img
from support import qemu_io
from support.backups_env import create_disk, same, write_random
from support.images_util import MiB, upload, wait_image, wait_job_progress
from support.jobs import submit, wait_for
from support.server import ServerProcess

# qemu-img convert -r 1 MiB/s: 6 MiB of data take about 6 s.
SLOW = {
    "DISKVAULT_IMAGE_CONVERT_RATE_LIMIT": str(MiB),
    "DISKVAULT_JOB_HEARTBEAT_S": "0.5",
    "DISKVAULT_SHUTDOWN_GRACE_S": "10",
}
GONE_WITHIN_S = 2.0  # the bound for children of a killed server


def data_image(path: Path, data: int = 6 * MiB) -> Path:
    qemu_img.create(path, "qcow2", 16 * MiB)
    qemu_io.write_pattern(path, "qcow2", 0, data, 0x5A)
    return path


def descendants(pid: int) -> dict[int, list[str]]:
    """Every process below ``pid``, with its command line."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    found: dict[int, list[str]] = {}
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        for child, parent in parents.items():
            if parent == current and child not in found:
                found[child] = children.cmdline(child)
                frontier.append(child)
    return found


def alive(pids: dict[int, list[str]]) -> dict[int, list[str]]:
    return {
        pid: argv
        for pid, argv in pids.items()
        if children.start_time(pid) is not None and children.cmdline(pid) == argv
    }


def wait_gone(pids: dict[int, list[str]], seconds: float) -> dict[int, list[str]]:
    deadline = time.monotonic() + seconds
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    return alive(pids)


def partial_sizes(data_dir: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in data_dir.rglob("*.partial") if p.is_file()}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "srv", env=SLOW, demo_jobs=True)
    proc.start()
    yield proc
    proc.stop()


def _kill(server: ServerProcess) -> dict[int, list[str]]:
    assert server.proc is not None
    kids = descendants(server.proc.pid)
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait()
    return kids


def test_sigkill_mid_conversion_leaves_no_tool_and_an_unlocked_source(
    server: ServerProcess, tmp_path: Path
) -> None:
    src = data_image(tmp_path / "big.qcow2")
    with server.client(server.login()) as client:
        resp = upload(client, src)
        assert resp.status_code == 202, resp.text
        image_id, job_id = resp.json()["id"], resp.json()["job_id"]
        wait_image(client, image_id, {"CONVERTING"})
        wait_job_progress(client, job_id)
    kids = _kill(server)
    assert any("qemu-img" in " ".join(argv) for argv in kids.values()), kids
    assert wait_gone(kids, GONE_WITHIN_S) == {}
    before = partial_sizes(server.data_dir)
    time.sleep(0.5)
    assert partial_sizes(server.data_dir) == before  # nothing is still being written
    staged = server.data_dir / "tmp" / f"{image_id}.source"
    assert staged.exists()
    # A write needs the write lock that a surviving qemu-img would hold.
    qemu_io.write_pattern(staged, "qcow2", 0, 512, 0x11)


def test_sigkill_kills_a_jobs_child_process(server: ServerProcess) -> None:
    with server.client(server.login()) as client:
        job = submit(client, seconds=60, subprocess=True)
        wait_for(client, job["id"], {"running"})
        deadline = time.monotonic() + 10
        while "child pid" not in (client.get(f"/api/v1/jobs/{job['id']}").json()["message"] or ""):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    kids = _kill(server)
    assert any(argv[:1] == ["sleep"] for argv in kids.values()), kids
    assert wait_gone(kids, GONE_WITHIN_S) == {}


def test_orphans_recorded_by_a_dead_run_are_stopped_at_start_up(
    server: ServerProcess, tmp_path: Path
) -> None:
    # A child that escaped (started before PDEATHSIG, say) is found by its record.
    orphan = subprocess.Popen(["sleep", "120"], start_new_session=True)
    try:
        server.stop()
        dead = subprocess.Popen(["true"])
        dead.wait()
        run_dir = server.data_dir / "run"
        record = {
            "owner": {"pid": dead.pid, "start": 1},
            "children": [
                {
                    "pid": orphan.pid,
                    "start": children.start_time(orphan.pid),
                    "argv": ["sleep", "120"],
                }
            ],
        }
        (run_dir / f"children-{dead.pid}.json").write_text(json.dumps(record))
        server.start()
        assert orphan.wait(10) == -signal.SIGTERM
        assert "stopped a child process left by a previous run" in server.log()
    finally:
        orphan.kill()
        orphan.wait()


def test_sigterm_requeues_running_jobs_and_the_next_start_completes_them(
    server: ServerProcess, tmp_path: Path
) -> None:
    srcs = [data_image(tmp_path / f"disk{i}.qcow2", 4 * MiB) for i in range(2)]
    with server.client(server.login()) as client:
        images = []
        for src in srcs:
            resp = upload(client, src)
            assert resp.status_code == 202, resp.text
            images.append(resp.json())
        counting = submit(client, seconds=30, steps=30)  # not idempotent
        wait_job_progress(client, images[0]["job_id"])
        wait_for(client, counting["id"], {"running"})
    assert server.proc is not None
    kids = descendants(server.proc.pid)
    server.stop(signal.SIGTERM, timeout=40)
    # uvicorn re-raises the signal it handled once it has shut down cleanly.
    assert server.proc.returncode in (0, -signal.SIGTERM)
    assert wait_gone(kids, GONE_WITHIN_S) == {}
    assert not list((server.data_dir / "tmp").glob("*.partial")), "partial outputs were kept"
    server.start()
    with server.client(server.login()) as client:
        for image in images:
            job = wait_for(client, image["job_id"], {"succeeded", "failed", "cancelled"}, 90)
            assert job["status"] == "succeeded", job
            assert job["attempts"] == 1  # the interrupted run does not count
            assert wait_image(client, image["id"], {"READY", "ERROR"})["status"] == "READY"
        job = wait_for(client, counting["id"], {"succeeded", "failed", "cancelled"}, 60)
        assert job["status"] == "succeeded" and job["attempts"] == 1, job
    assert "interrupted by a clean stop and requeued" in server.log()


def _watch(server: ServerProcess, token: str, job_id: str) -> list[tuple[float, dict]]:
    url = server.url.replace("http://", "ws://") + f"/ws/jobs/{job_id}?token={token}"
    out = []
    with connect(url, open_timeout=10) as ws:
        for raw in ws:
            out.append((time.monotonic(), json.loads(raw)))
    return out


def test_progress_is_monotonic_across_phases_and_streamed_every_500ms(
    server: ServerProcess, tmp_path: Path
) -> None:
    src = data_image(tmp_path / "phases.qcow2")
    token = server.login()
    with server.client(token) as client:
        resp = upload(client, src)
        assert resp.status_code == 202, resp.text
        messages = _watch(server, token, resp.json()["job_id"])
    assert messages[-1][1]["type"] == "completed", messages[-1]
    running = [(t, m) for t, m in messages if m["type"] == "progress"]
    assert running, messages
    done = [m["bytes_done"] for _, m in running]
    percent = [m["percent"] for _, m in running]
    assert done == sorted(done) and percent == sorted(percent)
    assert max(done) > 0
    # Converting and hashing both count: the total covers the whole job.
    totals = {m["bytes_total"] for _, m in running if m["bytes_total"]}
    assert max(totals) >= 2 * 16 * MiB, totals
    # At least one message per 500 ms while it ran (counted, not timed per gap).
    span = messages[-1][0] - running[0][0]
    assert span > 1, "the conversion was expected to take seconds"
    assert len(running) + 1 >= int(span / 0.5), (len(running), span)


def test_many_watchers_each_get_a_message_every_500ms(server: ServerProcess) -> None:
    token = server.login()
    with server.client(token) as client:
        job = submit(client, seconds=3, steps=6)
    results: list[list[tuple[float, dict]]] = []

    import threading

    threads = [
        threading.Thread(target=lambda: results.append(_watch(server, token, job["id"])))
        for _ in range(20)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 20
    for messages in results:
        assert messages[-1][1]["type"] == "completed"
        span = messages[-1][0] - messages[0][0]
        assert len(messages) >= int(span / 0.5), (len(messages), span)


def test_sigkill_mid_full_backup_leaves_no_daemon_and_a_writable_source(
    server: ServerProcess, tmp_path: Path
) -> None:
    disk = create_disk(tmp_path / "vm.qcow2", size=32 * MiB)
    with server.client(server.login()) as api:
        resp = api.post("/api/v1/sources", json={"name": "vm", "kind": "qcow2", "path": str(disk)})
        assert resp.status_code == 201, resp.text
        body = {"vm_name": "vm", "backup_type": "full", "speed": 2 * MiB}
        job = api.post("/api/v1/backup/start", json=body).json()
        deadline = time.monotonic() + 60
        while api.get(f"/api/v1/jobs/{job['id']}").json()["bytes_done"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    kids = _kill(server)
    assert any("qemu-storage-daemon" in " ".join(argv) for argv in kids.values()), kids
    assert wait_gone(kids, GONE_WITHIN_S) == {}
    before = partial_sizes(server.data_dir)
    time.sleep(0.5)
    assert partial_sizes(server.data_dir) == before
    qemu_io.write_pattern(disk, "qcow2", 0, 512, 0x22)  # the write lock is free
    # Nothing is left locked or half-registered: the next run of that disk succeeds.
    server.start()
    with server.client(server.login()) as api:
        first = api.post("/api/v1/backup/start", json={"vm_name": "vm"}).json()
        assert wait_for(api, first["id"], {"succeeded", "failed"}, 60)["status"] == "succeeded"


def test_sigterm_of_the_whole_group_requeues_too(server: ServerProcess, tmp_path: Path) -> None:
    """systemctl stop with KillMode=control-group signals our tools with us."""
    src = data_image(tmp_path / "group.qcow2")
    with server.client(server.login()) as client:
        resp = upload(client, src)
        assert resp.status_code == 202, resp.text
        image = resp.json()
        wait_job_progress(client, image["job_id"])
    assert server.proc is not None
    kids = descendants(server.proc.pid)
    for pid in [server.proc.pid, *kids]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    server.proc.wait(40)
    server.start()
    with server.client(server.login()) as client:
        job = wait_for(client, image["job_id"], {"succeeded", "failed", "cancelled"}, 90)
        assert job["status"] == "succeeded", job
        assert wait_image(client, image["id"], {"READY", "ERROR"})["status"] == "READY"


def test_sigterm_mid_incremental_backup_requeues_it_with_change_tracking_intact(
    server: ServerProcess, tmp_path: Path
) -> None:
    disk = create_disk(tmp_path / "inc.qcow2", size=32 * MiB)
    with server.client(server.login()) as api:
        body = {"name": "inc", "kind": "qcow2", "path": str(disk)}
        assert api.post("/api/v1/sources", json=body).status_code == 201
        full = api.post("/api/v1/backup/start", json={"vm_name": "inc"}).json()
        assert wait_for(api, full["id"], {"succeeded", "failed"}, 60)["status"] == "succeeded"
        write_random(disk, "qcow2", 0.3, seed=7, size=32 * MiB)
        slow = api.post("/api/v1/backup/start", json={"vm_name": "inc", "speed": MiB}).json()
        deadline = time.monotonic() + 60
        while api.get(f"/api/v1/jobs/{slow['id']}").json()["bytes_done"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    server.stop(signal.SIGTERM, timeout=40)
    directory = server.data_dir / "backups" / "inc" / "disk-0"
    assert not [p.name for p in directory.iterdir() if p.name.endswith(".partial")]
    server.start()
    with server.client(server.login()) as api:
        job = wait_for(api, slow["id"], {"succeeded", "failed", "cancelled"}, 120)
        assert job["status"] == "succeeded" and job["attempts"] == 1, job
        items = api.get("/api/v1/backup/list", params={"vm_name": "inc"}).json()["items"]
        done = sorted(
            (p for p in items if p["status"] == "completed"), key=lambda p: p["created_at"]
        )
        first, last = done[0], done[-1]
        # The bitmap survived the stop: the rerun is still an incremental on the full.
        assert last["backup_type"] == "incremental" and last["parent_backup_id"] == first["id"]
        assert same(server.data_dir / "backups" / last["path"], disk)


def test_sigkill_mid_verification_leaves_no_tool_and_a_writable_source(
    server: ServerProcess, tmp_path: Path
) -> None:
    disk = create_disk(tmp_path / "ver.qcow2")
    with server.client(server.login()) as api:
        body = {"name": "ver", "kind": "qcow2", "path": str(disk)}
        assert api.post("/api/v1/sources", json=body).status_code == 201
        run = api.post("/api/v1/backup/start", json={"vm_name": "ver"}).json()
        assert wait_for(api, run["id"], {"succeeded", "failed"}, 60)["status"] == "succeeded"
        (point,) = api.get("/api/v1/backup/list", params={"vm_name": "ver"}).json()["items"]
        job = api.post(f"/api/v1/backup/{point['id']}/verify").json()
        wait_for(api, job["id"], {"running", "succeeded"})
    kids = _kill(server)
    assert wait_gone(kids, GONE_WITHIN_S) == {}
    assert partial_sizes(server.data_dir) == {}
    qemu_io.write_pattern(disk, "qcow2", 0, 512, 0x33)
    server.start()
    with server.client(server.login()) as api:
        # Verification is idempotent: the start-up requeues it and it runs to the end.
        done = wait_for(api, job["id"], {"succeeded", "failed", "cancelled"}, 60)
        assert done["status"] == "succeeded", done
