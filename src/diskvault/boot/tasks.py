"""Job kinds and periodic work of diskless boot."""

from __future__ import annotations

from typing import Any

from diskvault.boot import promote, recovery, service, sessions, verify, verify_policy, versions
from diskvault.boot.verify import VERIFY_BOOT_JOB
from diskvault.config import Settings
from diskvault.jobs.context import JobContext
from diskvault.jobs.registry import job_kind
from diskvault.jobs.scheduler import periodic
from diskvault.tools.process import Cancelled


@job_kind(service.APPLY_JOB, max_attempts=1, on_failure=versions.apply_failed)
def apply_writeback(ctx: JobContext) -> dict[str, Any]:
    """Merge a machine's writeback layer into a new current version of its image."""
    try:
        return versions.apply_writeback(ctx)
    except Cancelled:  # cancelled jobs skip the failure hook
        versions.apply_failed(ctx.settings, ctx.job_id, ctx.params, "cancelled by request")
        raise


@periodic("boot-sessions", lambda s: s.BOOT_SESSION_CHECK_INTERVAL_S, per_node=True)
def watch_sessions(settings: Settings) -> None:
    sessions.check_sessions(settings)
    sessions.check_storage(settings)


@periodic("boot-version-expiry", lambda s: s.BOOT_VERSION_EXPIRY_INTERVAL_S)
def expire_versions(settings: Settings) -> None:
    versions.expire(settings)


@job_kind(recovery.PROMOTE_JOB, max_attempts=1)
def promote_recovery(ctx: JobContext) -> dict[str, Any]:
    """Copy a running recovery (restore point plus the guest's writes) to an image or file."""
    return promote.run(ctx)


@job_kind(VERIFY_BOOT_JOB, max_attempts=1, rerun=True)
def verify_boot(ctx: JobContext) -> dict[str, Any]:
    """Boot a restore point in a throw-away QEMU and record the verdict on it."""
    return verify.verify_point(ctx.settings, ctx.params["backup_id"], ctx.job_id, ctx.should_cancel)


@periodic("boot-verify-policies", lambda s: s.BACKUP_POLICY_INTERVAL_S)
def verify_boot_policies(settings: Settings) -> None:
    verify_policy.tick(settings)
