"""Errors of the iSCSI target layer.

Every class is a :class:`TargetError`, so callers can catch one type, and also
a subclass of the HTTP category it belongs to (first base wins in the MRO, so
``status`` and ``exit_code`` come from the category).
"""

from __future__ import annotations

from diskvault.errors import (
    Conflict,
    DiskvaultError,
    NotFound,
    ServiceUnavailable,
    Unprocessable,
)


class TargetError(DiskvaultError):
    """A target backend operation failed; ``detail`` carries the tool's message."""

    template = "iSCSI target operation failed: {detail}"
    status = 502
    exit_code = 10
    title = "iSCSI target error"


class InvalidIqn(Unprocessable, TargetError):
    template = (
        "{name!r} is not a valid iSCSI name: {detail}. "
        "Use iqn.YYYY-MM.reversed.domain[:suffix], eui.<16 hex> or naa.<16 or 32 hex>"
    )


class InvalidPortal(Unprocessable, TargetError):
    template = "portal {portal!r} cannot be used: {detail}"


class InvalidLun(Unprocessable, TargetError):
    template = "LUN {lun} cannot be used: {detail}"


class InvalidBackstore(Unprocessable, TargetError):
    template = "backstore {name!r} ({path}) cannot be used: {detail}"


class InvalidChap(Unprocessable, TargetError):
    template = "CHAP credentials rejected: {detail}"


class TargetExists(Conflict, TargetError):
    template = "{what} {name!r} already exists; delete it first or pick another name"


class ChapUserInUse(Conflict, TargetError):
    template = (
        "CHAP user {user!r} is already bound to {targets}; tgt accounts are global, "
        "so give each target its own CHAP user"
    )


class TargetBusy(Conflict, TargetError):
    template = (
        "target {iqn} has connected initiators ({initiators}); disconnect them or delete with force"
    )


class TargetNotFound(NotFound, TargetError):
    template = "iSCSI target {iqn} was not found"


class BackendUnavailable(ServiceUnavailable, TargetError):
    template = "iSCSI target backend {backend} is unavailable: {detail}"


class BadBackendName(Unprocessable, TargetError):
    template = "unknown iSCSI target backend {name!r}; use one of: {known}"
