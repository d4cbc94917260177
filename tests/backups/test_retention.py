"""Prune with Proxmox Backup Server semantics, its simulator, and applying it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from diskvault.backups import retention
from diskvault.backups.models import Backup
from diskvault.backups.retention import Candidate, select_points
from diskvault.config import Settings
from diskvault.db.engine import session_scope
from support.backups_env import add_source, backup, create_disk, image, same, save, write_random

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # a Monday


def at(hours: float, protected: str | None = None) -> Candidate:
    when = T0 + timedelta(hours=hours)
    return Candidate(when.strftime("%m%dT%H%M"), when, protected)


def kept(decisions: list[retention.Decision]) -> list[str]:
    return [d.id for d in decisions if d.keep]


def test_keep_last() -> None:
    points = [at(h) for h in range(10)]
    decisions = select_points(points, {"keep_last": 3})
    assert kept(decisions) == ["0302T1700", "0302T1600", "0302T1500"]
    assert decisions[0].reason == "keep-last 1/3"
    assert decisions[-1].reason == "not selected by any rule"


def test_keep_daily_keeps_newest_of_each_day() -> None:
    points = [at(d * 24 + h) for d in range(4) for h in (0, 4, 8)]
    decisions = select_points(points, {"keep_daily": 2})
    assert kept(decisions) == ["0305T1600", "0304T1600"]
    assert "keep-daily 2/2 (2026-03-04)" in [d.reason for d in decisions if d.keep]


def test_rules_skip_periods_already_covered_like_pbs() -> None:
    points = [at(2), at(4), at(26), at(28)]  # two on Monday, two on Tuesday
    decisions = select_points(points, {"keep_last": 1, "keep_daily": 2})
    assert kept(decisions) == ["0303T1200", "0302T1200"]
    reasons = {d.id: d.reason for d in decisions}
    assert reasons["0303T1200"] == "keep-last 1/1"
    assert reasons["0303T1000"] == "not selected by any rule"
    assert reasons["0302T1200"].startswith("keep-daily 1/2")
    assert reasons["0302T1000"].startswith("keep-daily: a newer point already covers")


def test_weekly_monthly_yearly_and_protected() -> None:
    points = [at(d * 24) for d in range(0, 70, 3)] + [at(-24 * 400, protected="immutable")]
    decisions = select_points(points, {"keep_weekly": 2, "keep_monthly": 2, "keep_yearly": 1})
    weekly = [d for d in decisions if d.keep and d.reason.startswith("keep-weekly")]
    assert [d.reason.split("(")[1] for d in weekly] == ["2026-W19)", "2026-W18)"]
    assert sum(d.keep and d.reason.startswith("keep-monthly") for d in decisions) == 2
    assert not any(d.reason.startswith("keep-yearly") for d in decisions)  # 2026 is covered
    assert decisions[-1].keep and decisions[-1].reason == "protected: immutable"


def test_no_rules_keeps_everything() -> None:
    assert all(d.keep for d in select_points([at(1), at(2)], {}))


def test_prune_simulates_then_applies(bsettings: Settings, repo: str, tmp_path: Path) -> None:
    disk = create_disk(tmp_path / "vm.qcow2")
    add_source(bsettings, "vm1", "qcow2", disks=[str(disk)])
    saved = []
    for n in range(5):
        saved.append((backup(bsettings, "vm1", repo), save(disk, tmp_path / f"at-{n}.qcow2")))
        write_random(disk, "qcow2", 0.05, seed=300 + n)
    with session_scope(bsettings.DATABASE_URL) as s:
        plan = retention.prune(
            s, bsettings, repository_id=repo, vm="vm1", disk=0, rules={"keep_last": 2}
        )
        assert s.query(Backup).count() == 5
    assert [d["id"] for d in plan["keep"]] == [saved[4][0], saved[3][0]]
    assert len(plan["remove"]) == 3 and plan["dry_run"]
    with session_scope(bsettings.DATABASE_URL) as s:
        done = retention.prune(
            s,
            bsettings,
            repository_id=repo,
            vm="vm1",
            disk=0,
            rules={"keep_last": 2},
            dry_run=False,
        )
        assert sorted(b.id for b in s.query(Backup)) == sorted([saved[3][0], saved[4][0]])
    assert done["refused"] == []
    for backup_id, copy in saved[3:]:
        assert same(image(bsettings, backup_id), copy)
    assert len(list(image(bsettings, saved[4][0]).parent.glob("*.qcow2"))) == 2
