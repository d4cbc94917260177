"""What a policy's next run would keep, remove and merge, and which rule decided each.

Shown when a policy is created or changed (and recorded in its history), so that
retention never surprises: without ``adopt_existing`` a policy touches only the
points it made, and the preview says so for every other point.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from diskvault.backups import chain as chains
from diskvault.backups import retention
from diskvault.backups.models import Backup, BackupPolicy
from diskvault.config import Settings

NOTE = (
    "computed from the restore points there now; the run's own new point comes on top "
    "(it may cause one more merge when a chain is at its maximum length)"
)
HISTORY_KEEP = 20  # newest entries of a policy's history


def owner_of(policy: BackupPolicy) -> str | None:
    """The policy id whose points alone may go; a policy not saved yet owns none."""
    if policy.adopt_existing:
        return None
    return policy.id or "(new policy)"


def disks(session: Session, repository_id: str, vm: str) -> list[int]:
    rows = session.scalars(
        select(Backup.disk_index)
        .where(Backup.repository_id == repository_id, Backup.vm_name == vm)
        .distinct()
    )
    return sorted(rows)


def preview(session: Session, settings: Settings, policy: BackupPolicy) -> dict[str, Any]:
    owner = owner_of(policy)
    keep: list[dict[str, Any]] = []
    remove: list[dict[str, Any]] = []
    merge: list[dict[str, Any]] = []
    for vm in policy.sources:
        for disk in disks(session, policy.repository_id, vm):
            points = retention.candidates(session, policy.repository_id, vm, disk)
            for decision in retention.decide(points, dict(policy.retention or {}), owner):
                row = {"vm_name": vm, "disk": disk, **decision.out()}
                (keep if decision.keep else remove).append(row)
            gone = {r["id"] for r in remove}
            merge += _merges(session, settings, policy, vm, disk, gone, owner)
    return {
        "at": datetime.now(UTC).isoformat(),
        "adopt_existing": bool(policy.adopt_existing),
        "keep": keep,
        "remove": remove,
        "merge": merge,
        "destructive": bool(remove or merge),
        "note": NOTE,
    }


def _merges(
    session: Session,
    settings: Settings,
    policy: BackupPolicy,
    vm: str,
    disk: int,
    gone: set[str],
    owner: str | None,
) -> list[dict[str, Any]]:
    """The engine's consolidation before the new point: the oldest points fold into the
    full while the chain plus the new point is longer than the maximum."""
    chain = chains.active_chain(session, policy.repository_id, vm, disk)
    limit = policy.max_chain_length or settings.BACKUP_MAX_CHAIN_LENGTH
    if chain is None or policy.backup_type == "full" or limit < 2:
        return []
    points = [p for p in chains.ordered(session, chain.id) if p.id not in gone]
    out = []
    while len(points) >= 2 and len(points) + 1 > limit:
        if chains.not_owned(points, owner) or chains.blocked(session, points[:3], points):
            break
        out.append(
            {
                "vm_name": vm,
                "disk": disk,
                "id": points[0].id,
                "into": points[1].id,
                "rule": "max-chain-length",
                "reason": f"max-chain-length {limit}: the full is folded into its child",
            }
        )
        points = points[1:]
    return out


def record(policy: BackupPolicy, event: str, shown: dict[str, Any]) -> None:
    """Append ``shown`` to the policy's history (a new list, so the JSON column is saved)."""
    entry = {"at": shown["at"], "event": event, "preview": shown}
    policy.history = [*(policy.history or []), entry][-HISTORY_KEEP:]
