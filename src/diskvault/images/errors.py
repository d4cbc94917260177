"""Errors of the image library."""

from __future__ import annotations

from enum import StrEnum

from diskvault.errors import (
    BadRequest,
    Conflict,
    DiskvaultError,
    Forbidden,
    InsufficientStorage,
    NotFound,
    PayloadTooLarge,
    TooManyRequests,
    Unprocessable,
)


class Reason(StrEnum):
    """Why an image was rejected; stable strings for the API and the CLI."""

    UNREADABLE = "unreadable"
    EMPTY = "empty"
    INVALID_HEADER = "invalid-header"
    UNSUPPORTED_FORMAT = "unsupported-format"
    FORMAT_MISMATCH = "format-mismatch"
    POLYGLOT = "polyglot"
    BACKING_FILE = "backing-file"
    DATA_FILE = "external-data-file"
    UNKNOWN_FEATURE = "unknown-feature"
    ENCRYPTED = "encrypted"
    CORRUPT = "corrupt"
    VMDK_CREATE_TYPE = "vmdk-create-type"
    VMDK_EXTENT = "vmdk-external-extent"
    TOO_LARGE = "virtual-size-too-large"
    QEMU_DISAGREES = "qemu-img-disagrees"
    CHECK_FAILED = "qemu-img-check-failed"
    CHECKSUM_MISMATCH = "checksum-mismatch"


_SELF_CONTAINED = "convert it to a self-contained image (qemu-img convert -O qcow2) and import that"
_CHECK_FILE = (
    "check that the file is a complete disk image in a supported format "
    "(qcow2, vhdx, vmdk, vdi, vhd, raw or iso)"
)
ADVICE: dict[Reason, str] = {
    Reason.BACKING_FILE: _SELF_CONTAINED,
    Reason.DATA_FILE: _SELF_CONTAINED,
    Reason.VMDK_CREATE_TYPE: _SELF_CONTAINED,
    Reason.VMDK_EXTENT: _SELF_CONTAINED,
    Reason.ENCRYPTED: "decrypt it (qemu-img convert with the key) and import the plain image",
    Reason.FORMAT_MISMATCH: "import it again with the format it really has",
    Reason.POLYGLOT: "convert it on a trusted machine to a plain image and import that",
    Reason.TOO_LARGE: "shrink the image or raise the virtual size limit",
    Reason.CHECK_FAILED: "the file is damaged or was cut short; upload a complete copy again",
    Reason.CHECKSUM_MISMATCH: "the file changed or was damaged on the way; upload it again",
}


class UnsafeImage(Unprocessable):
    """The image's headers show something that could read outside it or hurt the host."""

    template = "image rejected ({reason}): {detail}; {advice}"
    title = "Unsafe or unsupported image"

    def __init__(self, reason: Reason, detail: str) -> None:
        self.reason = reason
        super().__init__(detail, reason=str(reason), advice=ADVICE.get(reason, _CHECK_FILE))


class ImageNotFound(NotFound):
    template = "image {id} was not found; list images with GET /api/v1/images"


class ImageBusy(Conflict):
    template = "image {id} is {status}: {detail}"
    title = "Image busy"


class ImageInUse(Conflict):
    template = "image {id} is in use: {detail}; remove that use first, then retry"
    title = "Image in use"


class InvalidUpload(BadRequest):
    template = "invalid upload: {detail}"
    title = "Invalid upload"


class UploadTooLarge(PayloadTooLarge):
    template = (
        "the image is {size} bytes, over the {limit}-byte limit; "
        "raise DISKVAULT_MAX_VIRTUAL_SIZE or import a smaller image"
    )


class InsufficientSpace(InsufficientStorage):
    template = (
        "not enough free space in {path}: {action} needs {needed} bytes but {free} are free; "
        "free some space or point DISKVAULT_TEMP_STORAGE_PATH at a larger filesystem"
    )
    title = "Insufficient storage"


class ImportRefused(Forbidden):
    template = "import refused: {detail}"
    title = "Import refused"


class ImportFailed(BadRequest):
    template = "import from {source} failed: {detail}"
    title = "Import failed"


class ShrinkRefused(Conflict):
    template = "cannot shrink image {id} to {size} bytes: {detail}"
    title = "Shrink refused"


class ResizeRefused(Conflict):
    template = "cannot resize image {id}: {detail}"
    title = "Resize refused"


class ResizeTooLarge(Unprocessable):
    template = (
        "cannot resize image {id} to {size} bytes: that is over the size limit of {limit} "
        "bytes; raise {setting} to allow larger images"
    )
    title = "Over the size limit"


class RangeNotSatisfiable(DiskvaultError):
    template = "range {range} is outside the {size}-byte image"
    status = 416
    exit_code = 2
    title = "Range not satisfiable"


class UploadStalled(DiskvaultError):
    template = (
        "no bytes of the upload arrived for {timeout} s, so it was dropped; upload again "
        "(a slow link may raise DISKVAULT_UPLOAD_IDLE_TIMEOUT_S)"
    )
    status = 408
    exit_code = 2
    title = "Upload stalled"


class TooManyUploads(TooManyRequests):
    template = (
        "{user} already has {count} uploads in progress, the limit of "
        "DISKVAULT_UPLOADS_PER_USER; retry in {retry_after} s when one has finished"
    )
    title = "Too many uploads"


class TooManyJobs(TooManyRequests):
    template = (
        "{user} already has {count} queued or running jobs, the limit of "
        "DISKVAULT_JOBS_PER_USER; retry in {retry_after} s when some have finished"
    )
    title = "Too many jobs"
