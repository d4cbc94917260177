"""iSCSI names (RFC 3720 section 3.2.6, RFC 3980 for naa) and portals.

Names are checked strictly: lowercase ASCII only for ``iqn.``, because tgt
and LIO compare names byte for byte and an initiator that sends the
normalized (lowercase) form would not match an ACL written in uppercase.
"""

from __future__ import annotations

import errno
import ipaddress
import re
import socket

from diskvault.targets.errors import InvalidIqn, InvalidPortal

MAX_NAME_BYTES = 223
DEFAULT_IQN_DATE = "2024-01"
DEFAULT_IQN_DOMAIN = "com.example"

_LABEL = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
_IQN = re.compile(
    rf"iqn\.(?P<year>\d{{4}})-(?P<month>\d{{2}})\.(?P<authority>{_LABEL}(?:\.{_LABEL})*)"
    r"(?::(?P<suffix>.*))?"
)
_SUFFIX = re.compile(r"[a-z0-9.:-]+")
_EUI = re.compile(r"eui\.[0-9a-fA-F]{16}")
_NAA = re.compile(r"naa\.(?:[0-9a-fA-F]{16}|[0-9a-fA-F]{32})")
_NOT_NAME = re.compile(r"[^a-z0-9.-]+")


def _invalid(name: str, detail: str) -> InvalidIqn:
    return InvalidIqn(detail, name=name)


def validate_iqn(name: str) -> str:
    """Return ``name`` if it is a valid iqn./eui./naa. name, else raise :class:`InvalidIqn`."""
    if not name:
        raise _invalid(name, "it is empty")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise _invalid(name, f"it is longer than {MAX_NAME_BYTES} bytes")
    if name.startswith("eui."):
        if not _EUI.fullmatch(name):
            raise _invalid(name, "an eui. name is 'eui.' followed by 16 hex digits")
        return name
    if name.startswith("naa."):
        if not _NAA.fullmatch(name):
            raise _invalid(name, "a naa. name is 'naa.' followed by 16 or 32 hex digits")
        return name
    if not name.startswith("iqn."):
        raise _invalid(name, "it must start with iqn., eui. or naa.")
    if name != name.lower():
        raise _invalid(name, "iqn. names must be lowercase")
    match = _IQN.fullmatch(name)
    if match is None:
        raise _invalid(name, "expected iqn.YYYY-MM.reversed.domain with an optional :suffix")
    if not 1 <= int(match["month"]) <= 12:
        raise _invalid(name, f"month {match['month']} is not 01-12")
    suffix = match["suffix"]
    if suffix is not None and not _SUFFIX.fullmatch(suffix):
        raise _invalid(name, "the suffix after ':' may only hold a-z, 0-9, '.', '-' and ':'")
    return name


def make_iqn(name: str, *, date: str = DEFAULT_IQN_DATE, domain: str = DEFAULT_IQN_DOMAIN) -> str:
    """Build ``iqn.<date>.<domain>:<name>``; ``domain`` is already reversed (com.example).

    ``name`` is lowercased and every run of characters outside [a-z0-9.-]
    becomes one ``-``, so "Lab PC #3" gives "lab-pc-3".
    """
    suffix = _NOT_NAME.sub("-", name.lower()).strip("-.")
    if not suffix:
        raise _invalid(name, "the name has no letters or digits to build a suffix from")
    return validate_iqn(f"iqn.{date}.{domain}:{suffix}")


def parse_portal(portal: str) -> tuple[str, int]:
    """Split ``ip:port`` or ``[ipv6]:port`` into a normalized address and port."""
    host, sep, port_text = portal.rpartition(":")
    if not sep or not host:
        raise InvalidPortal("expected ip:port, e.g. 127.0.0.1:3260", portal=portal)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise InvalidPortal(f"{host!r} is not an IP address", portal=portal) from None
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise InvalidPortal(f"port {port_text!r} is not 1-65535", portal=portal)
    return str(address), int(port_text)


def format_portal(ip: str, port: int) -> str:
    """The inverse of :func:`parse_portal`: brackets around IPv6 addresses."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def is_local_address(ip: str) -> bool:
    """True if this host owns ``ip`` (or it is a wildcard): binding to it succeeds."""
    address = ipaddress.ip_address(ip)
    if address.is_unspecified:
        return True
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((ip, 0))
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                return False
            raise
    return True


def validate_portal(portal: str) -> tuple[str, int]:
    """Parse ``portal`` and check that its address belongs to this host."""
    ip, port = parse_portal(portal)
    if not is_local_address(ip):
        raise InvalidPortal(
            f"{ip} is not an address of this host; use one of its addresses, 127.0.0.1 or 0.0.0.0",
            portal=portal,
        )
    return ip, port
