"""The iSCSI target backend Protocol and the values it passes around.

A backend is stateless: everything it needs is read back from the target
stack (tgtd or configfs) on each call, so the API process and the workers can
each build their own instance. diskvault's DB holds the desired state; the
reconciler replays these calls after tgtd or the host restarts.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from typing import Protocol

from diskvault.targets.errors import InvalidBackstore, InvalidChap

# tgtadm takes secrets on its command line and configfs stores them as
# single-line text, so whitespace and control characters cannot round-trip.
_CHAP_TOKEN = re.compile(r"[!-~]{1,255}")


def _check_token(what: str, value: str) -> None:
    if not _CHAP_TOKEN.fullmatch(value):
        raise InvalidChap(f"{what} must be 1-255 printable ASCII characters without spaces")


@dataclass(frozen=True)
class Chap:
    """CHAP credentials; ``mutual_*`` set means the target also proves itself."""

    user: str
    secret: str = field(repr=False)
    mutual_user: str | None = None
    mutual_secret: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        _check_token("the CHAP user", self.user)
        _check_token("the CHAP secret", self.secret)
        if (self.mutual_user is None) != (self.mutual_secret is None):
            raise InvalidChap("mutual CHAP needs both mutual_user and mutual_secret")
        if self.mutual_user is not None and self.mutual_secret is not None:
            _check_token("the mutual CHAP user", self.mutual_user)
            _check_token("the mutual CHAP secret", self.mutual_secret)
            if self.mutual_secret == self.secret:
                raise InvalidChap("the mutual secret must differ from the initiator's secret")


@dataclass(frozen=True)
class Backstore:
    """A file or block device that can back LUNs, under a backend-wide name."""

    name: str
    path: str
    size: int


@dataclass(frozen=True)
class LunInfo:
    lun: int
    backing_path: str | None


@dataclass
class Session:
    """One logged-in initiator; ``addresses`` holds one entry per connection."""

    initiator: str
    addresses: list[str] = field(default_factory=list)
    session_id: int | None = None


@dataclass
class TargetInfo:
    iqn: str
    luns: list[LunInfo] = field(default_factory=list)
    initiators: list[str] = field(default_factory=list)
    """Initiator names allowed to log in; ignored when ``open_access``."""
    open_access: bool = False
    """Any initiator may log in (tgt: address ACL ALL; LIO: generated node ACLs)."""
    chap_users: list[str] = field(default_factory=list)
    mutual_chap_user: str | None = None
    portals: list[str] = field(default_factory=list)
    tid: int | None = None
    """tgt's numeric target id; None on LIO."""


@dataclass
class TargetStatus:
    iqn: str
    sessions: list[Session] = field(default_factory=list)

    @property
    def connected(self) -> bool:
        return bool(self.sessions)

    @property
    def initiators(self) -> list[str]:
        return sorted({s.initiator for s in self.sessions})


class TargetBackend(Protocol):
    """What the target service needs from tgt or LIO.

    Every method finishes within the backend's timeout and raises a
    :class:`~diskvault.targets.errors.TargetError` subclass that carries the
    tool's message.
    """

    name: str

    def create_backstore(self, name: str, path: str) -> Backstore: ...

    def create_target(self, iqn: str) -> TargetInfo: ...

    def create_lun(self, iqn: str, lun: int, backstore: Backstore) -> None: ...

    def create_acl(self, iqn: str, initiator_iqn: str | None, chap: Chap | None) -> None:
        """Allow ``initiator_iqn`` (None: any initiator), optionally behind CHAP."""
        ...

    def enable_portal(self, iqn: str, ip: str, port: int) -> None: ...

    def delete_target(self, iqn: str, force: bool = False) -> None:
        """Delete; raises TargetBusy while initiators are logged in unless ``force``."""
        ...

    def list_targets(self) -> list[TargetInfo]: ...

    def get_target_status(self, iqn: str) -> TargetStatus: ...

    def save_config(self) -> None:
        """Persist the running configuration where the backend supports it."""
        ...


_BACKSTORE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def describe_backstore(name: str, path: str) -> Backstore:
    """Check that ``path`` is an absolute regular file or block device; measure it."""
    if not _BACKSTORE_NAME.fullmatch(name):
        raise InvalidBackstore(
            "names are 1-64 of A-Z a-z 0-9 _ . - and start with a letter or digit",
            name=name,
            path=path,
        )
    if not os.path.isabs(path):
        raise InvalidBackstore("the path must be absolute", name=name, path=path)
    try:
        mode = os.stat(path).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
            raise InvalidBackstore(
                "it is neither a regular file nor a block device", name=name, path=path
            )
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
    except OSError as exc:
        raise InvalidBackstore(exc.strerror or str(exc), name=name, path=path) from None
    if size == 0:
        raise InvalidBackstore("it is empty", name=name, path=path)
    return Backstore(name, path, size)
