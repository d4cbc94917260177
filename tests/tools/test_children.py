"""Children die with their parent, and a dead run's leftovers are stopped at start-up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from diskvault.tools import children, orphans
from diskvault.tools.qsd import QsdServer

# Starts a tool from a thread that then exits, prints the tool's pid, and waits.
SPAWNER = """
import sys, threading, time
from diskvault.tools.process import Process
out = {}
def start():
    p = Process(["sleep", "60"]); p.start(); out["pid"] = p.proc.pid
t = threading.Thread(target=start); t.start(); t.join()
print(out["pid"], flush=True)
time.sleep(60)
"""


def _gone(pid: int, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while children.start_time(pid) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_child_outlives_its_spawning_thread_but_not_its_process() -> None:
    parent = subprocess.Popen([sys.executable, "-c", SPAWNER], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    time.sleep(0.3)  # the spawning thread is gone by now
    assert children.start_time(child) is not None, "the child died with its thread"
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    assert _gone(child), "the child outlived its SIGKILLed parent"


def _dead_owner() -> dict[str, int]:
    proc = subprocess.Popen(["sleep", "30"])
    owner = {"pid": proc.pid, "start": children.start_time(proc.pid) or 0}
    proc.kill()
    proc.wait()
    return owner


def _write(run_dir: Path, owner: dict[str, int], entries: list[dict]) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / f"children-{owner['pid']}.json"
    path.write_text(json.dumps({"owner": owner, "children": entries}))
    return path


def _entry(proc: subprocess.Popen[bytes], **extra: str) -> dict:
    start = children.start_time(proc.pid)
    return {"pid": proc.pid, "start": start, "argv": [str(a) for a in proc.args], **extra}  # type: ignore[union-attr]


def test_orphans_of_a_dead_run_are_stopped_and_reported(tmp_path: Path) -> None:
    orphan = subprocess.Popen(["sleep", "61"], start_new_session=True)
    other = subprocess.Popen(["sleep", "62"], start_new_session=True)
    try:
        entry = _entry(orphan)
        # Same pid and start time but another command line: not ours, left alone.
        foreign = {**_entry(other), "argv": ["sleep", "999"]}
        path = _write(tmp_path, _dead_owner(), [entry, foreign])
        reports = orphans.reap_orphans(tmp_path)
        assert [r["pid"] for r in reports] == [orphan.pid]
        assert reports[0]["stopped_by"] == "SIGTERM" and reports[0]["argv"] == entry["argv"]
        assert orphan.wait(5) == -signal.SIGTERM
        assert other.poll() is None
        assert not path.exists()
    finally:
        for p in (orphan, other):
            p.kill()
            p.wait()


def test_a_live_owners_children_are_not_touched(tmp_path: Path) -> None:
    child = subprocess.Popen(["sleep", "63"])
    try:
        me = {"pid": os.getpid(), "start": children.start_time(os.getpid()) or 0}
        path = _write(tmp_path, me, [_entry(child)])
        assert orphans.reap_orphans(tmp_path) == []
        assert child.poll() is None and path.exists()
    finally:
        child.kill()
        child.wait()


def test_an_orphaned_qsd_is_quit_over_qmp(tmp_path: Path) -> None:
    qsd = QsdServer(tmp_path / "qsd", name="orphan-test")
    qsd.start()
    try:
        assert qsd.pid is not None
        pid = qsd.pid
        entry = {
            "pid": pid,
            "start": children.start_time(pid),
            "argv": children.cmdline(pid),
            "qmp": str(qsd.socket_path),
        }
        # Our own session to the monitor is closed, as a dead owner's would be.
        assert qsd._qmp is not None
        qsd._qmp.close()
        qsd._qmp = None
        reports = orphans.reap_orphans(_write_and_dir(tmp_path / "run", entry))
        assert [(r["pid"], r["stopped_by"]) for r in reports] == [(pid, "qmp quit")]
    finally:
        qsd.stop(timeout=2)


def _write_and_dir(run_dir: Path, entry: dict) -> Path:
    _write(run_dir, _dead_owner(), [entry])
    return run_dir


def test_registry_records_live_children_and_forgets_them(tmp_path: Path) -> None:
    registry = children.Registry()
    registry.configure(tmp_path)
    child = subprocess.Popen(["sleep", "64"])
    try:
        registry.record(child.pid, ["sleep", "64"])
        body = json.loads((tmp_path / f"children-{os.getpid()}.json").read_text())
        assert [c["pid"] for c in body["children"]] == [child.pid]
        assert body["owner"]["pid"] == os.getpid()
        registry.forget(child.pid)
        body = json.loads((tmp_path / f"children-{os.getpid()}.json").read_text())
        assert body["children"] == []
    finally:
        child.kill()
        child.wait()
