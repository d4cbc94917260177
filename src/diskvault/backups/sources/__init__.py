"""Backup source kinds: a small Protocol (:mod:`.base`) and the name → class map."""

from __future__ import annotations

from diskvault.backups.sources.base import Source
from diskvault.backups.sources.libvirt import LibvirtSource
from diskvault.backups.sources.nbd import NbdSource
from diskvault.backups.sources.qcow2 import Qcow2Source
from diskvault.backups.sources.qmp import QmpSource
from diskvault.backups.sources.raw import RawSource

SOURCES: dict[str, type[Source]] = {
    "qcow2": Qcow2Source,
    "qmp": QmpSource,
    "libvirt": LibvirtSource,
    "nbd": NbdSource,
    "raw": RawSource,
}

__all__ = ["SOURCES", "Source"]
