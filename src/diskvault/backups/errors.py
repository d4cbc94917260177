"""Errors of the backups domain: each says what happened and what to do."""

from __future__ import annotations

from diskvault.errors import (
    BadRequest,
    Conflict,
    DiskvaultError,
    Forbidden,
    InsufficientStorage,
    NotFound,
    ServiceUnavailable,
    Unprocessable,
)


class BackupError(DiskvaultError):
    template = "backup failed: {detail}"
    title = "Backup error"


class SourceNotFound(NotFound):
    template = "backup source {id} was not found; list sources with 'diskvault source list'"


class RepositoryNotFound(NotFound):
    template = "backup repository {id} was not found; list them with 'diskvault backup repo list'"


class BackupNotFound(NotFound):
    template = "restore point {id} was not found; list them with 'diskvault backup list --vm NAME'"


class PolicyNotFound(NotFound):
    template = "backup policy {id} was not found; list them with 'diskvault backup policy list'"


class SourceExists(Conflict):
    template = "a backup source named {name} already exists; pick another name or delete it first"


class RepositoryExists(Conflict):
    template = "a repository named {name} already exists; pick another name"


class PolicyExists(Conflict):
    template = "a policy named {name} already exists; pick another name"


class InvalidSource(Unprocessable):
    template = "invalid {kind} source: {detail}"


class InvalidRepository(Unprocessable):
    template = "invalid repository: {detail}"


class InvalidSchedule(Unprocessable):
    template = "invalid cron schedule {schedule!r}: {detail}; use 5 fields, e.g. '0 2 * * *'"


class InvalidRestoreTarget(Unprocessable):
    template = "cannot restore to {target}: {detail}"


class RestoreTargetRefused(Forbidden):
    """A restore target outside what an administrator allowed."""

    template = "cannot restore to {target}: {detail}; an administrator can allow it with {setting}"
    title = "Restore target not allowed"


class NbdTargetUnavailable(Unprocessable):
    """One message for refused, timed-out and non-NBD targets alike (no port probing)."""

    template = (
        "cannot restore to {target}: the NBD export could not be opened within {timeout:g} s; "
        "check that the NBD server is running and exports a disk, then retry"
    )


class SourceUnavailable(ServiceUnavailable, BackupError):
    template = (
        "source {source} disk {disk} cannot be read: {detail}; check it is reachable and retry"
    )
    title = "Source unavailable"


class RepositoryFull(InsufficientStorage, BackupError):
    template = (
        "repository {repository} ran out of space while writing {path}; the partial file was "
        "removed and earlier restore points are intact: free space or prune, then retry"
    )
    title = "Repository full"


class DiskBusy(Conflict):
    template = (
        "{what} is busy ({holder}); wait for it to finish (diskvault jobs list --status running) "
        "and retry"
    )


class PointImmutable(Conflict):
    template = (
        "restore point {id} is immutable until {until}; it cannot be deleted or merged before "
        "its immutability window ends"
    )


class PointInUse(Conflict):
    template = "restore point {id} is in use ({reason}); unmount or finish using it and retry"


class PointNotReady(Conflict):
    template = "restore point {id} is {status}; only completed restore points can be {action}"


class NotSupportedHere(BadRequest):
    template = "{detail}"


class VerifyFailed(BackupError):
    template = "verification of {id} found {count} problem(s): {detail}"


class RestoreMismatch(BackupError):
    template = "restored disk {target} differs from restore point {id}; it was removed"


class CopyFailed(BackupError):
    template = "copy of {key} to {target} failed verification: {detail}"


class InvalidKeyFile(Unprocessable):
    template = "key file {path} cannot be used: {detail}"


class KeyUnavailable(Conflict):
    template = (
        "{what} needs backup key {fingerprint}, which is not available ({detail}); put that key "
        "file where the repository's key_file points (or DISKVAULT_BACKUP_KEY_FILE) and retry; "
        "nothing was written"
    )


class EncryptionLocked(Conflict):
    template = (
        "repository {name} holds {count} restore point(s), so its encryption cannot change; "
        "start new chains under a new key with POST /api/v1/repositories/{name}/rekey"
    )
