"""What keeps a run cheap without giving up its guarantees: one fsync of each new file,
taken while it is checksummed and before the rename; no flushes inside QEMU while it
copies; copy offload for fulls only; a daemon ready and a job's end seen within ms."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from diskvault.backups import checksums, engine
from diskvault.backups import repository as repo_files
from diskvault.backups.sources.qcow2 import FAST_COPY, POLL
from diskvault.config import Settings
from diskvault.tools import qmp_block
from diskvault.tools.qsd import QsdServer
from support.backups_env import backup, image, write_random


def test_new_file_is_fsynced_and_checksummed_before_its_rename(
    bsettings: Settings, repo: str, disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = checksums.fsync_path, os.replace

    def fsync(path: Path) -> None:
        events.append(("fsync", Path(path).name))
        real_fsync(path)

    def replace(src: Any, dst: Any) -> None:
        events.append(("rename", Path(src).name))
        real_replace(src, dst)

    monkeypatch.setattr(checksums, "fsync_path", fsync)
    monkeypatch.setattr(engine.os, "replace", replace)
    first = backup(bsettings, "vm1", repo)
    write_random(disk, "qcow2", 0.05, seed=3)
    second = backup(bsettings, "vm1", repo)
    for point in (first, second):
        final = image(bsettings, point)
        partial = repo_files.partial(final).name
        assert events.index(("fsync", partial)) < events.index(("rename", partial))
        # The checksums recorded are those of the bytes stored, so verify can trust them.
        side = repo_files.read_sidecar(repo_files.sidecar_path(final))
        assert side["checksums"] == {final.name: checksums.digest_file(final)}


def test_seal_returns_the_checksums_of_every_file_by_published_name(tmp_path: Path) -> None:
    files = {"a.qcow2": tmp_path / "a.partial", "a.hashmap": tmp_path / "m.partial"}
    files["a.qcow2"].write_bytes(os.urandom(3 * checksums.BLOCK_SIZE + 5))
    files["a.hashmap"].write_bytes(b"")
    sums = checksums.seal(files)
    assert sums == {name: checksums.digest_file(path) for name, path in files.items()}


def test_target_is_not_flushed_by_qemu_and_only_a_full_uses_copy_offload(
    bsettings: Settings, repo: str, disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[tuple[str, dict[str, Any]]] = []
    real_qmp = qmp_block.BlockClient.qmp

    def qmp(self: qmp_block.BlockClient, cmd: str, args: Any = None, **kw: Any) -> Any:
        sent.append((cmd, {**(args or {}), **kw}))
        return real_qmp(self, cmd, args, **kw)

    monkeypatch.setattr(qmp_block.BlockClient, "qmp", qmp)
    backup(bsettings, "vm1", repo)
    write_random(disk, "qcow2", 0.05, seed=4)
    backup(bsettings, "vm1", repo)
    targets = [a for c, a in sent if c == "blockdev-add" and a["node-name"].startswith("dvt-")]
    assert len(targets) == 2
    assert all(a["cache"] == {"no-flush": True} for a in targets)
    jobs = [
        action["data"]
        for c, a in sent
        if c == "transaction"
        for action in a["actions"]
        if action["type"] == "blockdev-backup"
    ]
    assert [(j["sync"], j.get("x-perf")) for j in jobs] == [
        ("full", FAST_COPY),
        ("bitmap", None),
    ]


def test_daemon_is_ready_without_a_polling_sleep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = QsdServer(tmp_path / "qsd", name="t")

    def no_sleep(seconds: float) -> None:
        raise AssertionError(f"slept {seconds}s waiting for the daemon")

    try:
        with monkeypatch.context() as patch:
            patch.setattr(time, "sleep", no_sleep)
            server.start()
        assert server.qmp("query-version")["qemu"]["major"] >= 7
    finally:
        server.stop()


def test_end_of_a_short_job_is_polled_for_within_ms(
    bsettings: Settings, repo: str, disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backup(bsettings, "vm1", repo)
    write_random(disk, "qcow2", 0.001, seed=5)
    naps: list[float] = []
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", sleep)
    backup(bsettings, "vm1", repo)
    # A whole polling interval used to pass before the first look at the job; now the
    # job is looked at first (it may even be over then), so a tiny incremental never
    # sleeps a whole interval anywhere in the run.
    assert all(nap < POLL for nap in naps), naps
    assert sum(naps) < POLL, naps
