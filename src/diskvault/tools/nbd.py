"""nbdinfo (libnbd-bin): sizes and extent maps of NBD exports.

An incremental backup from an NBD source that publishes
``qemu:dirty-bitmap:<name>`` copies only the extents this module reports dirty.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from diskvault.tools.process import ToolError, run

NBDINFO_BINARY = "nbdinfo"
TIMEOUT = 60.0


class NbdError(ToolError):
    tool_name = "nbdinfo"


@dataclass(frozen=True)
class Extent:
    offset: int
    length: int
    type: int
    description: str


def unix_url(socket: Path, export: str = "") -> str:
    """``nbd+unix:///<export>?socket=<path>``"""
    return f"nbd+unix:///{quote(export, safe='')}?socket={quote(str(socket), safe='/')}"


def export_size(url: str, *, binary: str = NBDINFO_BINARY, timeout: float = TIMEOUT) -> int:
    return int(run([binary, "--size", url], timeout=timeout, error=NbdError).stdout.strip())


def map_extents(
    url: str,
    context: str = "base:allocation",
    *,
    binary: str = NBDINFO_BINARY,
    timeout: float = TIMEOUT,
) -> list[Extent]:
    """All extents of a metadata context, merged runs of one type each."""
    out = run([binary, f"--map={context}", "--json", url], timeout=timeout, error=NbdError).stdout
    return [
        Extent(int(e["offset"]), int(e["length"]), int(e["type"]), str(e.get("description", "")))
        for e in json.loads(out)
    ]


def dirty_extents(
    url: str, bitmap: str, *, binary: str = NBDINFO_BINARY, timeout: float = TIMEOUT
) -> list[Extent]:
    """Extents set in the exported dirty bitmap ``bitmap`` (type bit 0 is dirty)."""
    extents = map_extents(url, f"qemu:dirty-bitmap:{bitmap}", binary=binary, timeout=timeout)
    return [e for e in extents if e.type & 1]
