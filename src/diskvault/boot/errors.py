"""Errors of the diskless-boot domain."""

from __future__ import annotations

from diskvault.errors import (
    Conflict,
    DiskvaultError,
    InsufficientStorage,
    NotFound,
    Unprocessable,
)


class MachineNotFound(NotFound):
    template = "machine {id} was not found"


class InvalidMac(Unprocessable):
    template = "{mac!r} is not a MAC address; write it as six hex pairs, e.g. 52:54:00:12:34:56"


class MacTaken(Conflict):
    template = "MAC address {mac} already belongs to machine {machine}; remove or edit that one"


class MachineNameTaken(Conflict):
    template = "a machine named {name!r} already exists; pick another name"


class MachineConnected(Conflict):
    template = (
        "machine {name} is booted (initiator {initiators} is logged in to its disk); "
        "shut it down, then {action} again"
    )


class MachineBusy(Conflict):
    template = "machine {name} is {status}: {detail}"


class ImageNotBootable(Conflict):
    template = "image {image_id} cannot be booted: {detail}"


class VersionNotFound(NotFound):
    template = "image {image_id} has no version {version}"


class VersionInUse(Conflict):
    template = "version {version} of image {image_id} cannot be deleted: {detail}"


class WritebackError(DiskvaultError):
    """A writeback layer could not be created, exported or stopped."""

    template = "writeback layer of machine {machine} failed: {detail}"
    status = 502
    exit_code = 10
    title = "Writeback layer error"


class WritebackFull(InsufficientStorage, WritebackError):
    template = (
        "writeback storage {path} is full ({free} bytes free): {detail}; "
        "free space there or discard writebacks"
    )


class BootRateLimited(DiskvaultError):
    template = (
        "too many boot requests from {client}; retry in {retry_after} s "
        "(the limit is {setting} per minute)"
    )
    status = 429
    exit_code = 6
    title = "Too many requests"


class RecoveryNotFound(NotFound):
    template = "recovery {id} was not found"


class RecoveryMacBusy(Conflict):
    template = (
        "MAC {mac} already boots {what}; stop that first (diskvault recovery stop ID "
        "or shut the machine down)"
    )


class PointNotBootable(Conflict):
    template = "restore point {id} cannot be booted: {reason}"


class BootVerifyUnavailable(DiskvaultError):
    template = "boot verification cannot run: {detail}"
    status = 503
    exit_code = 10
    title = "Boot verification unavailable"


class BootVerifyFailed(DiskvaultError):
    template = "restore point {id} did not boot: {detail}"
    status = 422
    exit_code = 1
    title = "Boot verification failed"
