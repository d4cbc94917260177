"""Start-up warnings of ``diskvault serve``: settings a first run usually trips on.

Each warning is one line; none stops the server (the features they concern
refuse with their own clear errors when used).
"""

from __future__ import annotations

import os
from pathlib import Path

from diskvault.config import Settings

# The processes that may hold the iSCSI portal on our behalf.
ISCSI_DAEMONS = {"tgtd"}


def warnings(settings: Settings) -> list[str]:
    out = []
    if not settings.ORGANIZER_ROOTS:
        out.append(
            "DISKVAULT_ORGANIZER_ROOTS is empty: the organizer refuses every scan and apply "
            'until it lists the folders it may manage (e.g. ["file:///srv/images"])'
        )
    holder = portal_holder(settings.ISCSI_PORTAL)
    if holder is not None:
        out.append(
            f"DISKVAULT_ISCSI_PORTAL {settings.ISCSI_PORTAL} is in use by {holder}: targets "
            "will not be reachable there; stop it or choose another portal"
        )
    return out


def portal_holder(portal: str) -> str | None:
    """The process other than an iSCSI daemon listening on ``portal``'s TCP port
    ("name (pid N)", or "another process" when /proc does not say), else None."""
    host, _, port_text = portal.rpartition(":")
    if not port_text.isdigit():
        return None
    inodes = _listening_inodes(int(port_text), host.strip("[]"))
    if not inodes:
        return None
    owners = _owners(inodes)
    if not owners:
        return "another process"
    foreign = [o for o in owners if o[1] not in ISCSI_DAEMONS and o[0] != os.getpid()]
    if not foreign:
        return None
    pid, name = foreign[0]
    return f"{name} (pid {pid})"


def _listening_inodes(port: int, host: str) -> set[str]:
    """Inodes of TCP sockets listening on ``port`` (at ``host``, the wildcard, or anywhere
    when ``host`` is a wildcard)."""
    wildcard = host in ("", "0.0.0.0", "::", "*")  # noqa: S104 - parsing, not binding
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, local_port = fields[1].rsplit(":", 1)
            if fields[3] != "0A" or int(local_port, 16) != port:  # 0A: LISTEN
                continue
            if wildcard or set(address) == {"0"} or _hex_ip(address) == host:
                found.add(fields[9])
    return found


def _hex_ip(address: str) -> str | None:
    if len(address) != 8:
        return None
    return ".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0))


def _owners(inodes: set[str]) -> list[tuple[int, str]]:
    wanted = {f"socket:[{inode}]" for inode in inodes}
    owners = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(_link(fd) in wanted for fd in (proc / "fd").iterdir()):
                owners.append((int(proc.name), (proc / "comm").read_text().strip()))
        except OSError:  # gone, or not ours to read
            continue
    return owners


def _link(fd: Path) -> str:
    try:
        return os.readlink(fd)
    except OSError:  # closed while we looked
        return ""
