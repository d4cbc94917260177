"""Errors of file-level restore: each says what happened and what to do."""

from __future__ import annotations

from diskvault.errors import BadRequest, Conflict, DiskvaultError, NotFound, ServiceUnavailable


class MountNotFound(NotFound):
    template = "restore mount {id} was not found; list mounts with 'diskvault restore list'"


class MountNotActive(NotFound):
    template = (
        "restore mount {id} is {status} ({detail}); mount the restore point again with "
        "'diskvault backup mount --backup-id {backup_id}'"
    )


class MountBusy(Conflict):
    template = "restore mount {id} is {status}; try again in a moment"


class MountOnOtherNode(Conflict):
    template = (
        "restore mount {id} lives on node {node}, not on {here}; send the request to {node}'s API"
    )


class TooManyMounts(ServiceUnavailable):
    template = (
        "node {node} already has {count} restore mounts (DISKVAULT_RESTORE_MAX_MOUNTS); "
        "unmount some with 'diskvault backup umount MOUNT' first"
    )


class MountFailed(DiskvaultError):
    template = "mounting restore point {backup_id} failed: {detail}"
    title = "Mount failed"


class PathOutside(BadRequest):
    template = "path {path!r} is not allowed: {reason}"


class PathNotFound(NotFound):
    template = "{path} was not found on partition {partition} of restore mount {id}"


class NotADirectory(BadRequest):
    template = "{path} is not a directory; download it with /download?path=..."


class NotAFile(BadRequest):
    template = "{path} is a {kind}; only regular files and directories can be downloaded"


class PartitionNotFound(NotFound):
    template = "restore mount {id} has no partition {partition}; its partitions are {available}"


class PartitionNotMounted(Conflict):
    template = "partition {partition} of restore mount {id} is not mounted: {reason}"


class NothingMounted(Conflict):
    template = (
        "restore mount {id} has no mounted filesystem; its partitions are listed in "
        "GET /api/v1/restore/{id} with the reason each one could not be mounted"
    )
