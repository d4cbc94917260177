"""iSCSI target backends by name: ``tgt`` (userspace tgtd) and ``lio`` (kernel, configfs)."""

from __future__ import annotations

from typing import Any

from diskvault.targets.backends.base import (
    Backstore,
    Chap,
    LunInfo,
    Session,
    TargetBackend,
    TargetInfo,
    TargetStatus,
)
from diskvault.targets.backends.lio import LioBackend
from diskvault.targets.backends.tgt import TgtBackend
from diskvault.targets.errors import BadBackendName

BACKENDS: dict[str, type[TgtBackend] | type[LioBackend]] = {"tgt": TgtBackend, "lio": LioBackend}


def get_backend(name: str, **kw: Any) -> TargetBackend:
    """Build the backend called ``name`` with its constructor's keyword arguments."""
    try:
        cls = BACKENDS[name]
    except KeyError:
        raise BadBackendName(name=name, known=", ".join(sorted(BACKENDS))) from None
    return cls(**kw)


__all__ = [
    "BACKENDS",
    "Backstore",
    "Chap",
    "LioBackend",
    "LunInfo",
    "Session",
    "TargetBackend",
    "TargetInfo",
    "TargetStatus",
    "TgtBackend",
    "get_backend",
]
