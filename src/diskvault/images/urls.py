"""Where a URL import may connect, and the download itself.

A URL must use http(s) and an allowed port. Its host is resolved here and every
address it resolves to is vetted: loopback, private, link-local, multicast,
unspecified, reserved and cloud-metadata addresses are refused (an IPv4 address
inside IPv6, such as ``::ffff:127.0.0.1``, is judged as that IPv4 address), unless
``IMPORT_URL_ALLOWED_HOSTS`` names the host or holds a network containing the
address. The download then connects to a vetted address itself (the Host header
and TLS SNI keep the name, so certificates are still checked against it) and
re-checks the peer of the connected socket, so a DNS answer that changes between
check and connect (rebinding) reaches nothing else. Each redirect is vetted anew.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from pathlib import Path
from urllib.parse import SplitResult, urljoin, urlsplit

import httpx

from diskvault.config import Settings
from diskvault.images.errors import ImportFailed, ImportRefused, UploadTooLarge
from diskvault.storage import redact_url
from diskvault.storage.base import os_errors
from diskvault.tools.process import Cancelled

MAX_REDIRECTS = 5
CHUNK = 1024 * 1024
DEFAULT_PORTS = {"http": 80, "https": 443}
HOSTS_SETTING = "DISKVAULT_IMPORT_URL_ALLOWED_HOSTS"
# Instance-metadata services: AWS/GCP/Azure/OpenStack, AWS over IPv6, AWS ECS, Alibaba.
METADATA = {
    ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "169.254.170.2", "100.100.100.200")
}

IP = IPv4Address | IPv6Address
Cancel = Callable[[], bool]
Progress = Callable[[int, int | None], None]


def refusal(ip: IP) -> str | None:
    """Why ``ip`` may not be fetched from by default, or None for a public address."""
    if isinstance(ip, IPv6Address):
        inner = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if inner is not None and (why := refusal(inner)) is not None:
            return why
        if ip.ipv4_mapped is not None:
            return None  # connecting to it reaches the (public) IPv4 address
    if ip in METADATA:
        return "cloud-metadata"
    checks = [
        (ip.is_unspecified, "unspecified"),
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"),
        (ip.is_multicast, "multicast"),
        (ip.is_reserved, "reserved"),
        (ip.is_private, "private"),
        (not ip.is_global, "not-globally-routable"),
    ]
    return next((why for hit, why in checks if hit), None)


def _allowlisted(settings: Settings, host: str, ip: IP) -> bool:
    name = host.lower().rstrip(".")
    for entry in settings.IMPORT_URL_ALLOWED_HOSTS:
        entry = entry.strip().lower().rstrip(".")
        if entry == name:
            return True
        try:
            if ip in ip_network(entry.strip("[]"), strict=False):
                return True
        except ValueError:
            continue  # a host name, not an address or network
    return False


def vet_address(settings: Settings, url: str, host: str, ip: IP) -> None:
    why = refusal(ip)
    if why is not None and not _allowlisted(settings, host, ip):
        raise ImportRefused(
            f"{redact_url(url)}: {host} resolves to {ip}, a {why} address; "
            f"an administrator can allow it with {HOSTS_SETTING}",
            reason=why,
            setting=HOSTS_SETTING,
        )


@dataclass(frozen=True)
class Target:
    url: str
    parts: SplitResult
    host: str
    port: int
    addresses: list[IP]


def check_url(settings: Settings, url: str) -> Target:
    """Vet ``url`` (scheme, port, and every address its host resolves to)."""
    if any(ord(ch) < 0x20 for ch in url):
        raise ImportFailed(source="the given URL", detail="a URL cannot hold control characters")
    parts = urlsplit(url)
    shown = redact_url(url)
    scheme = parts.scheme.lower()
    if parts.username is not None or parts.password is not None:
        raise ImportRefused(f"{shown}: credentials in URLs are refused (they would be stored)")
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        raise ImportRefused(f"{shown}: only http:// and https:// URLs with a host can be imported")
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        raise ImportRefused(f"{shown}: invalid port") from None
    if port not in settings.IMPORT_URL_ALLOWED_PORTS:
        raise ImportRefused(
            f"{shown}: port {port} is not allowed; allowed: "
            f"{settings.IMPORT_URL_ALLOWED_PORTS} (DISKVAULT_IMPORT_URL_ALLOWED_PORTS)",
            setting="DISKVAULT_IMPORT_URL_ALLOWED_PORTS",
        )
    host = parts.hostname
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ImportFailed(source=shown, detail=f"cannot resolve {host}: {exc}") from None
    addresses: list[IP] = []
    for info in infos:
        ip = ip_address(str(info[4][0]).split("%", 1)[0])
        vet_address(settings, url, host, ip)  # one bad answer refuses the whole name
        if ip not in addresses:
            addresses.append(ip)
    return Target(url, parts, host, port, addresses)


def fetch_url(
    settings: Settings,
    url: str,
    dest: Path,
    *,
    limit: int,
    progress: Progress | None = None,
    should_cancel: Cancel | None = None,
) -> tuple[int, str]:
    """Download ``url`` into ``dest`` with its SHA-256, following only vetted redirects."""
    timeout = httpx.Timeout(settings.IMPORT_URL_TIMEOUT_S)
    with httpx.Client(follow_redirects=False, timeout=timeout, trust_env=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            target = check_url(settings, url)
            try:
                with _Pinned(client, settings, target) as resp:
                    if resp.is_redirect:
                        url = urljoin(url, resp.headers.get("location", ""))
                        continue
                    if resp.status_code != 200:
                        raise ImportFailed(
                            source=redact_url(url), detail=f"HTTP {resp.status_code}"
                        )
                    return _save(resp, url, dest, limit, progress, should_cancel)
            except httpx.HTTPError as exc:
                detail = str(exc) or type(exc).__name__
                raise ImportFailed(source=redact_url(url), detail=detail) from exc
    raise ImportFailed(source=redact_url(url), detail=f"more than {MAX_REDIRECTS} redirects")


class _Pinned:
    """A streamed GET sent to one vetted address of ``target``, trying each in turn."""

    def __init__(self, client: httpx.Client, settings: Settings, target: Target) -> None:
        self.client, self.settings, self.target = client, settings, target
        self.resp: httpx.Response | None = None

    def __enter__(self) -> httpx.Response:
        t = self.target
        headers = {"Host": t.parts.netloc, "Accept-Encoding": "identity"}
        extensions = {"sni_hostname": t.host} if t.parts.scheme.lower() == "https" else {}
        for n, ip in enumerate(t.addresses):
            request = self.client.build_request(
                "GET",
                httpx.URL(t.url).copy_with(host=str(ip)),
                headers=headers,
                extensions=extensions,
            )
            try:
                self.resp = self.client.send(request, stream=True)
            except httpx.ConnectError:
                if n == len(t.addresses) - 1:
                    raise
                continue
            self._check_peer(ip)
            return self.resp
        raise ImportFailed(source=redact_url(t.url), detail=f"{t.host} has no address")

    def _check_peer(self, ip: IP) -> None:
        assert self.resp is not None
        stream = self.resp.extensions.get("network_stream")
        try:
            peer = stream.get_extra_info("server_addr") if stream is not None else None
        except OSError:
            self.resp.close()
            raise ImportFailed(
                source=redact_url(self.target.url), detail="the connection closed at once"
            ) from None
        if peer is None:
            return  # a reused keep-alive connection, vetted when it was opened
        actual = ip_address(str(peer[0]).split("%", 1)[0])
        if actual != ip:
            self.resp.close()
            raise ImportRefused(f"{redact_url(self.target.url)}: connected to {actual}, not {ip}")
        vet_address(self.settings, self.target.url, self.target.host, actual)

    def __exit__(self, *exc: object) -> None:
        if self.resp is not None:
            self.resp.close()


def _save(
    resp: httpx.Response,
    url: str,
    dest: Path,
    limit: int,
    progress: Progress | None,
    should_cancel: Cancel | None,
) -> tuple[int, str]:
    length = resp.headers.get("content-length")
    total = int(length) if length and length.isdigit() else None
    if total is not None and total > limit:
        raise UploadTooLarge(size=total, limit=limit)
    hasher = hashlib.sha256()
    size = 0
    with os_errors(dest.name, "TEMP_STORAGE_PATH"), open(dest, "xb") as fh:
        for chunk in resp.iter_bytes(CHUNK):
            size += len(chunk)
            if size > limit:
                raise UploadTooLarge(size=f"over {limit}", limit=limit)
            if should_cancel is not None and should_cancel():
                raise Cancelled()
            hasher.update(chunk)
            fh.write(chunk)
            if progress is not None:
                progress(size, total)
    if total is not None and size != total:
        raise ImportFailed(source=redact_url(url), detail=f"got {size} of {total} bytes")
    return size, hasher.hexdigest()
