"""Job kinds of the backups domain, and the scheduler's policy check."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import delete, select

from diskvault.backups import chain as chains
from diskvault.backups import copy as copies
from diskvault.backups import engine, policies, restore, retention, service, verify
from diskvault.backups import repository as repo_files
from diskvault.backups.errors import VerifyFailed
from diskvault.backups.locks import disk_lock, lock_key
from diskvault.backups.models import (
    Backup,
    BackupPolicy,
    BackupRepository,
    BackupStatus,
    DiskLock,
)
from diskvault.config import Settings
from diskvault.db.engine import session_scope
from diskvault.jobs.context import JobContext
from diskvault.jobs.registry import job_kind
from diskvault.jobs.scheduler import periodic


@contextlib.contextmanager
def _locked(ctx: JobContext, vm: str, disk: int) -> Iterator[None]:
    def waiting(holder: str) -> None:
        ctx.progress(message=f"waiting for {vm} disk {disk} ({holder})")

    with disk_lock(
        ctx.settings,
        lock_key(vm, disk),
        ctx.job_id,
        should_cancel=ctx.should_cancel,
        on_wait=waiting,
    ):
        yield


def _bytes(ctx: JobContext, label: str = "") -> Callable[[int, int], None]:
    def report(done: int, total: int) -> None:
        ctx.check_cancel()  # verify and copy have no cancel hook of their own
        ctx.progress(done, total, message=label or None)

    return report


def on_run_failed(settings: Settings, job_id: str, params: dict[str, Any], error: str) -> None:
    """Also called by the reaper for a killed worker: fail its points, remove their files."""
    with session_scope(settings.DATABASE_URL) as s:
        for point in s.scalars(
            select(Backup).where(
                Backup.job_id == job_id,
                Backup.status.in_([BackupStatus.pending, BackupStatus.running]),
            )
        ):
            if point.path:
                image = chains.image_of(s, point)
                for path in (repo_files.partial(image), *repo_files.point_files(image)):
                    path.unlink(missing_ok=True)
            point.status = BackupStatus.failed
            point.error = error[:4000]
            point.completed_at = chains.now()
        s.execute(delete(DiskLock).where(DiskLock.holder == job_id))


@job_kind("backup-run", on_failure=on_run_failed, rerun=True)
def backup_run(ctx: JobContext) -> dict[str, Any]:
    p = ctx.params
    policy = None
    with session_scope(ctx.settings.DATABASE_URL) as s:
        if p.get("policy_id"):
            policy = s.get(BackupPolicy, p["policy_id"])
            if policy is not None:
                s.expunge(policy)
    req = engine.RunRequest(
        vm_name=p["vm_name"],
        repository_id=p["repository_id"],
        requested=p.get("backup_type") or "auto",
        holder=ctx.job_id,
        job_id=ctx.job_id,
        policy_id=p.get("policy_id"),
        speed=p.get("speed"),
        max_chain_length=policy.max_chain_length if policy else None,
        immutability_days=(policy.immutability_days or None) if policy else None,
        compression=policy.compression if policy else None,
        merge_owner=_owner(policy),
    )
    ids = engine.run(
        ctx.settings,
        req,
        progress=lambda done, total, label: ctx.progress(done, total, message=label),
        should_cancel=ctx.should_cancel,
    )
    result: dict[str, Any] = {"backup_ids": ids}
    if policy is not None:
        result["prune"] = _prune(
            ctx,
            p["repository_id"],
            p["vm_name"],
            policy.retention,
            policy.max_chain_length,
            _owner(policy),
        )
        if policy.copy_repository_id:
            result["copy"] = _copy(ctx, p["repository_id"], policy.copy_repository_id, p["vm_name"])
    return result


def _owner(policy: BackupPolicy | None) -> str | None:
    """The policy whose points alone its retention and merges may touch (None: all)."""
    return policy.id if policy is not None and not policy.adopt_existing else None


def _point_disk(settings: Settings, backup_id: str) -> tuple[str, int]:
    with session_scope(settings.DATABASE_URL) as s:
        point = service.get_backup(s, backup_id)
        return point.vm_name, point.disk_index


@job_kind("backup-delete")
def backup_delete(ctx: JobContext) -> dict[str, Any]:
    vm, disk = _point_disk(ctx.settings, ctx.params["backup_id"])
    with _locked(ctx, vm, disk), session_scope(ctx.settings.DATABASE_URL) as s:
        point = service.completed(s, ctx.params["backup_id"], "deleted")
        chains.delete_point(s, ctx.settings, point)
    return {"deleted": ctx.params["backup_id"]}


@job_kind("backup-verify", idempotent=True, rerun=True)
def backup_verify(ctx: JobContext) -> dict[str, Any]:
    vm, disk = _point_disk(ctx.settings, ctx.params["backup_id"])
    with _locked(ctx, vm, disk), session_scope(ctx.settings.DATABASE_URL) as s:
        point = service.get_backup(s, ctx.params["backup_id"])
        result = verify.verify(s, ctx.settings, point, progress=_bytes(ctx, "verifying"))
    if result["problems"]:
        raise VerifyFailed(
            id=result["backup_id"],
            count=len(result["problems"]),
            detail="; ".join(result["problems"])[:2000],
        )
    return result


@job_kind("backup-restore", rerun=True)
def backup_restore(ctx: JobContext) -> dict[str, Any]:
    p = ctx.params
    vm, disk = _point_disk(ctx.settings, p["backup_id"])
    with _locked(ctx, vm, disk):
        with session_scope(ctx.settings.DATABASE_URL) as s:
            point = service.restore_point(s, p["backup_id"])
        pct = ctx.percent_callback(point.virtual_size)
        if p["target"] == "nbd":
            workdir = ctx.settings.temp_dir / "backup-work" / f"restore-{ctx.job_id}"
            return restore.to_nbd(
                ctx.settings,
                point.id,
                point.image,
                p["url"],
                virtual_size=point.virtual_size,
                workdir=workdir,
                progress=_bytes(ctx),
                should_cancel=ctx.should_cancel,
                crypt=point.crypt,
            )
        if p["target"] == "image":
            with session_scope(ctx.settings.DATABASE_URL) as s:
                from diskvault.jobs.models import Job

                job = s.get(Job, ctx.job_id)
                owner = job.owner if job else None
            return restore.to_image(
                ctx.settings,
                point.id,
                point.image,
                name=p["image_name"],
                owner=owner,
                progress=pct,
                should_cancel=ctx.should_cancel,
                crypt=point.crypt,
            )
        dest = restore.check_destination(ctx.settings, p["path"])
        ctx.cleanup_on_failure(dest.with_name(dest.name + ".partial"))
        return restore.to_file(
            ctx.settings,
            point.id,
            point.image,
            dest,
            p["format"],
            progress=pct,
            should_cancel=ctx.should_cancel,
            crypt=point.crypt,
        )


def _disks(settings: Settings, repository_id: str, vm: str) -> list[int]:
    with session_scope(settings.DATABASE_URL) as s:
        return sorted(
            set(
                s.scalars(
                    select(Backup.disk_index).where(
                        Backup.repository_id == repository_id, Backup.vm_name == vm
                    )
                )
            )
        )


def _prune(
    ctx: JobContext,
    repository_id: str,
    vm: str,
    rules: dict[str, Any],
    max_chain_length: int | None,
    owner: str | None = None,
) -> list[dict[str, Any]]:
    out = []
    for disk in _disks(ctx.settings, repository_id, vm):
        with _locked(ctx, vm, disk), session_scope(ctx.settings.DATABASE_URL) as s:
            out.append(
                retention.prune(
                    s,
                    ctx.settings,
                    repository_id=repository_id,
                    vm=vm,
                    disk=disk,
                    rules=rules,
                    max_chain_length=max_chain_length,
                    dry_run=False,
                    owner=owner,
                )
            )
    return out


@job_kind("backup-prune", rerun=True)
def backup_prune(ctx: JobContext) -> dict[str, Any]:
    p = ctx.params
    results = _prune(
        ctx,
        p["repository_id"],
        p["vm_name"],
        p["rules"],
        p.get("max_chain_length"),
        p.get("owner"),
    )
    return {"disks": results}


def _copy(ctx: JobContext, source_id: str, target_id: str, vm: str | None) -> dict[str, Any]:
    totals: dict[str, Any] = {"copied": [], "skipped": [], "removed": [], "bytes": 0}
    with session_scope(ctx.settings.DATABASE_URL) as s:
        groups = sorted(
            {(p.vm_name, p.disk_index) for p in copies.points_to_copy(s, source_id, vm)}
        )
    for name, disk in groups:
        with _locked(ctx, name, disk), session_scope(ctx.settings.DATABASE_URL) as s:
            source, target = s.get(BackupRepository, source_id), s.get(BackupRepository, target_id)
            assert source is not None and target is not None
            points = [p for p in copies.points_to_copy(s, source_id, name) if p.disk_index == disk]
            done = copies.copy(s, ctx.settings, source, target, points, progress=_bytes(ctx, name))
            totals["target"] = done["target"]
        for key in ("copied", "skipped", "removed"):
            totals[key] += done[key]
        totals["bytes"] += done["bytes"]
    return totals


@job_kind("backup-copy", idempotent=True, rerun=True)
def backup_copy(ctx: JobContext) -> dict[str, Any]:
    p = ctx.params
    return _copy(ctx, p["repository_id"], p["target_repository_id"], p.get("vm_name"))


@periodic("backups-policies", lambda s: s.BACKUP_POLICY_INTERVAL_S)
def run_policies(settings: Settings) -> None:
    policies.tick(settings)
