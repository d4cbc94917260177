"""Retention with Proxmox Backup Server's prune semantics, and its simulator.

Rules apply in order keep-last, -hourly, -daily, -weekly, -monthly, -yearly
over the restore points of one disk, newest first. Each rule keeps the newest
point of each new period (hour, day, ISO week...) until it has kept its count;
a period already covered by an earlier rule is skipped, and a point an earlier
rule passed over stays removed. Immutable or in-use points are protected. With
no rule set, everything is kept. Periods are in UTC.

A policy's rules apply only to the points that policy made (``owner``) unless the
policy has ``adopt_existing``: hand-made points and other policies' are kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from diskvault.backups import chain as chains
from diskvault.backups.errors import PointImmutable, PointInUse
from diskvault.backups.models import Backup, BackupChain, BackupStatus
from diskvault.config import Settings

RULES: dict[str, Callable[[datetime], str] | None] = {
    "keep_last": None,
    "keep_hourly": lambda t: t.strftime("%Y-%m-%d %H:00"),
    "keep_daily": lambda t: t.strftime("%Y-%m-%d"),
    "keep_weekly": lambda t: t.strftime("%G-W%V"),
    "keep_monthly": lambda t: t.strftime("%Y-%m"),
    "keep_yearly": lambda t: t.strftime("%Y"),
}


@dataclass
class Decision:
    id: str
    created_at: datetime
    keep: bool
    reason: str
    backup_type: str | None = None
    chain_id: str | None = None
    rule: str = ""  # what decided: keep-daily, protected, not-owned, no-rules...

    def out(self) -> dict[str, Any]:
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        return data


@dataclass(frozen=True)
class Candidate:
    id: str
    created_at: datetime
    protected: str | None = None
    backup_type: str | None = None
    chain_id: str | None = None
    policy_id: str | None = None


NOT_OWNED = "not made by this policy (set adopt_existing to manage it): kept"


def select_points(points: Sequence[Candidate], rules: dict[str, int | None]) -> list[Decision]:
    """PBS's mark_selections over ``points``; returns one decision per point, newest first."""
    newest = sorted(points, key=lambda p: p.created_at, reverse=True)
    marks: dict[str, tuple[bool, str]] = {}
    active = {name: n for name, n in rules.items() if n}
    if not active:
        marks = {p.id: (True, "no retention rules: everything is kept") for p in newest}
    for name, count in active.items():
        period = RULES[name]
        label = name.replace("_", "-")
        covered = {
            period(p.created_at) if period else p.id
            for p in newest
            if marks.get(p.id, (False, ""))[0]
        }
        seen: set[str] = set()
        for p in newest:
            if p.id in marks:
                continue
            if p.protected:
                marks[p.id] = (True, f"protected: {p.protected}")
                continue
            key = period(p.created_at) if period else p.id
            if key in covered:
                continue
            if key not in seen:
                if len(seen) >= count:
                    break
                seen.add(key)
                marks[p.id] = (
                    True,
                    f"{label} {len(seen)}/{count}" + (f" ({key})" if period else ""),
                )
            else:
                marks[p.id] = (False, f"{label}: a newer point already covers {key}")
    out = []
    for p in newest:
        if p.protected and not marks.get(p.id, (False, ""))[0]:
            marks[p.id] = (True, f"protected: {p.protected}")
        keep, reason = marks.get(p.id, (False, "not selected by any rule"))
        out.append(
            Decision(p.id, p.created_at, keep, reason, p.backup_type, p.chain_id, _rule(reason))
        )
    return out


def _rule(reason: str) -> str:
    head = reason.split(":", 1)[0].split(" ", 1)[0]
    return {"no": "no-rules", "not": "unselected"}.get(head, head)


def decide(
    points: Sequence[Candidate], rules: dict[str, int | None], owner: str | None
) -> list[Decision]:
    """:func:`select_points` over the points ``owner`` made (all when None); the rest are kept."""
    own = [p for p in points if owner is None or p.policy_id == owner]
    foreign = [
        Decision(p.id, p.created_at, True, NOT_OWNED, p.backup_type, p.chain_id, "not-owned")
        for p in points
        if owner is not None and p.policy_id != owner
    ]
    return sorted(select_points(own, rules) + foreign, key=lambda d: d.created_at, reverse=True)


def candidates(session: Session, repository_id: str, vm: str, disk: int) -> list[Candidate]:
    rows = session.scalars(
        select(Backup).where(
            Backup.repository_id == repository_id,
            Backup.vm_name == vm,
            Backup.disk_index == disk,
            Backup.status == BackupStatus.completed,
        )
    )
    out = []
    for row in rows:
        protected = None
        if chains.is_immutable(row):
            assert row.immutable_until is not None
            protected = f"immutable until {row.immutable_until.isoformat()}"
        elif reason := chains.busy_reason(session, row.id):
            protected = f"in use: {reason}"
        backup_type = row.backup_type.value if row.backup_type else None
        out.append(
            Candidate(row.id, row.created_at, protected, backup_type, row.chain_id, row.policy_id)
        )
    return out


def prune(
    session: Session,
    settings: Settings,
    *,
    repository_id: str,
    vm: str,
    disk: int,
    rules: dict[str, int | None],
    max_chain_length: int | None = None,
    dry_run: bool = True,
    owner: str | None = None,
) -> dict[str, Any]:
    """Decide (and unless ``dry_run``, apply) what to keep; the caller holds the disk lock.
    With ``owner`` (a policy id) only that policy's points may go."""
    decisions = decide(candidates(session, repository_id, vm, disk), rules, owner)
    result: dict[str, Any] = {"vm_name": vm, "disk": disk, "dry_run": dry_run, "refused": []}
    if not dry_run:
        doomed = sorted((d for d in decisions if not d.keep), key=lambda d: d.created_at)
        for decision in _whole_chains_first(session, doomed):
            point = session.get(Backup, decision.id)
            if point is None:
                continue
            try:
                chains.delete_point(session, settings, point)
            except (PointImmutable, PointInUse) as exc:
                session.rollback()
                decision.keep, decision.reason = True, f"kept: {exc.message}"
                result["refused"].append({"id": decision.id, "reason": exc.message})
        if max_chain_length:
            result["consolidation"] = _consolidate(
                session, settings, repository_id, vm, disk, max_chain_length, owner
            )
    result["keep"] = [d.out() for d in decisions if d.keep]
    result["remove"] = [d.out() for d in decisions if not d.keep]
    return result


def _whole_chains_first(session: Session, doomed: list[Decision]) -> list[Decision]:
    """Points of chains that go entirely are deleted newest first (plain deletes,
    no merges); points of chains that stay are deleted oldest first."""
    doomed_ids = {d.id for d in doomed}
    whole: list[Decision] = []
    partial: list[Decision] = []
    for decision in doomed:
        points = chains.ordered(session, decision.chain_id or "")
        (whole if all(p.id in doomed_ids for p in points) else partial).append(decision)
    return sorted(whole, key=lambda d: d.created_at, reverse=True) + partial


def _consolidate(
    session: Session,
    settings: Settings,
    repository_id: str,
    vm: str,
    disk: int,
    max_length: int,
    owner: str | None,
) -> dict[str, Any]:
    chain: BackupChain | None = chains.active_chain(session, repository_id, vm, disk)
    if chain is None:
        return {"merged": [], "refused": None}
    merged, refused = chains.consolidate(session, settings, chain, max_length, owner)
    if refused:
        refused += "; the next backup starts a new chain with a full"
    return {"merged": merged, "refused": refused}


def simulate(
    session: Session,
    settings: Settings,
    *,
    repository_id: str,
    vm: str,
    rules: dict[str, Any],
    owner: str | None = None,
) -> list[dict[str, Any]]:
    """Every disk's keep/remove decisions for ``rules``, without changing anything."""
    stmt = select(Backup.disk_index).where(
        Backup.repository_id == repository_id, Backup.vm_name == vm
    )
    disks = sorted(set(session.scalars(stmt.distinct())))
    return [
        prune(
            session, settings, repository_id=repository_id, vm=vm, disk=d, rules=rules, owner=owner
        )
        for d in disks
    ]
