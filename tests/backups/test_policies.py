"""Policies: schedules queue runs and verifies; immutability windows with chattr +i."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from diskvault.backups import chain as chains
from diskvault.backups import policies
from diskvault.backups import repository as repo_files
from diskvault.backups.errors import InvalidSchedule, PointImmutable
from diskvault.backups.models import Backup, BackupPolicy
from diskvault.config import Settings
from diskvault.db.engine import session_scope
from diskvault.jobs.models import Job
from support.backups_env import add_repo, add_source, backup, create_disk, image, point


def attrs(path: Path) -> str:
    return subprocess.run(
        ["lsattr", str(path)], capture_output=True, text=True, check=True
    ).stdout.split()[0]


def test_schedules_queue_runs_and_verifies(bsettings: Settings, repo: str, tmp_path: Path) -> None:
    disk = create_disk(tmp_path / "vm.qcow2", size=8 * 1024 * 1024)
    add_source(bsettings, "vm1", "qcow2", disks=[str(disk)])
    backup(bsettings, "vm1", repo)
    with session_scope(bsettings.DATABASE_URL) as s:
        with pytest.raises(InvalidSchedule):
            policies.create(s, bsettings, {"name": "bad", "sources": ["vm1"], "schedule": "soon"})
        body = {
            "name": "often",
            "sources": ["vm1"],
            "repository": repo,
            "schedule": "* * * * *",
            "verify_schedule": "*/5 * * * *",
            "keep_last": 3,
        }
        policy, _ = policies.create(s, bsettings, body)
        policy.created_at = datetime.now(UTC) - timedelta(minutes=10)
        policy_id = policy.id
    policies.tick(bsettings)
    policies.tick(bsettings)  # nothing new is due a moment later
    with session_scope(bsettings.DATABASE_URL) as s:
        jobs = list(s.scalars(select(Job).order_by(Job.kind)))
        assert [j.kind for j in jobs] == ["backup-run", "backup-verify"]
        assert jobs[0].params["policy_id"] == policy_id and jobs[0].owner == "scheduler"
        row = s.get(BackupPolicy, policy_id)
        assert row is not None and row.last_run_at and row.last_verify_at


def test_immutable_files_get_chattr_until_window_ends(
    bsettings: Settings, tmp_path: Path, small_fs: Path
) -> None:
    repo = add_repo(bsettings, "hardened", small_fs / "repo", immutability_days=1.0)
    disk = create_disk(tmp_path / "vm.qcow2", size=8 * 1024 * 1024)
    add_source(bsettings, "vm1", "qcow2", disks=[str(disk)])
    first = backup(bsettings, "vm1", repo)
    row = point(bsettings, first)
    files = repo_files.point_files(image(bsettings, first))
    assert row.immutable_flag and len(files) == 2
    assert all("i" in attrs(f) for f in files)
    with pytest.raises(PermissionError):
        files[0].unlink()
    with session_scope(bsettings.DATABASE_URL) as s, pytest.raises(PointImmutable):
        chains.delete_point(s, bsettings, s.get(Backup, first))
    with session_scope(bsettings.DATABASE_URL) as s:
        s.get(Backup, first).immutable_until = datetime.now(UTC) - timedelta(seconds=1)
    policies.tick(bsettings)  # the scheduler lifts expired flags
    assert not any("i" in attrs(f) for f in files) and not point(bsettings, first).immutable_flag
    with session_scope(bsettings.DATABASE_URL) as s:
        chains.delete_point(s, bsettings, s.get(Backup, first))
    assert not any(f.exists() for f in files)


def test_policy_touches_only_its_own_points_and_previews_first(
    bsettings: Settings, repo: str, tmp_path: Path
) -> None:
    """Issue 17: a new keep-last 1 policy merged three hand-made points without a word."""
    import diskvault.backups.tasks  # noqa: F401  (registers the job kinds)
    from diskvault.jobs import runner
    from diskvault.jobs.models import JobStatus

    disk = create_disk(tmp_path / "vm.qcow2", size=8 * 1024 * 1024)
    add_source(bsettings, "vm1", "qcow2", disks=[str(disk)])
    hand = [backup(bsettings, "vm1", repo) for _ in range(3)]  # full + 2 incrementals
    body = {"name": "daily", "sources": ["vm1"], "repository": repo, "keep_last": 1}
    body["max_chain_length"] = 2
    with session_scope(bsettings.DATABASE_URL) as s:
        policy, shown = policies.create(s, bsettings, body)
        policy_id = policy.id
    assert not shown["destructive"] and shown["remove"] == [] and shown["merge"] == []
    assert sorted(p["id"] for p in shown["keep"]) == sorted(hand)
    assert {p["rule"] for p in shown["keep"]} == {"not-owned"}

    for _ in range(2):
        with session_scope(bsettings.DATABASE_URL) as s:
            (job_id,) = policies.run_now(s, bsettings, s.get(BackupPolicy, policy_id), "t")
        runner.run_job(bsettings, job_id)
        with session_scope(bsettings.DATABASE_URL) as s:
            job = s.get(Job, job_id)
            assert job is not None and job.status == JobStatus.succeeded, job.error
    with session_scope(bsettings.DATABASE_URL) as s:
        rows = list(s.scalars(select(Backup).where(Backup.vm_name == "vm1")))
        mine = [r for r in rows if r.policy_id == policy_id]
        assert sorted(r.id for r in rows if r.policy_id is None) == sorted(hand)
        assert len(mine) == 1 and mine[0].backup_type is not None  # keep-last 1 of its own
        assert {r.chain_id for r in mine} != {point(bsettings, hand[0]).chain_id}

    # Adopting the hand-made points: the preview shows they would go, and is recorded.
    with session_scope(bsettings.DATABASE_URL) as s:
        _, changed = policies.update(s, bsettings, "daily", {"adopt_existing": True})
        history = s.get(BackupPolicy, policy_id).history
    assert changed["destructive"] and changed["adopt_existing"]
    assert sorted(p["id"] for p in changed["remove"]) == sorted(hand)
    assert {p["rule"] for p in changed["remove"]} == {"unselected"}  # keep-last 1 took the newest
    assert changed["keep"][0]["rule"] == "keep-last"
    assert [h["event"] for h in history] == ["created", "changed"]
    assert history[1]["preview"]["remove"] == changed["remove"]
