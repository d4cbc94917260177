"""Boot requests: the iPXE script for a MAC, the address to advertise, a rate limit.

Every request gets a script. A known machine whose layer could be served gets
one that sanboots its target; anything else gets one that prints why and
retries (an unknown MAC may chain a default menu instead).
"""

from __future__ import annotations

import ipaddress
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from diskvault.boot import recovery, service, writeback
from diskvault.boot.errors import InvalidMac, WritebackFull
from diskvault.boot.models import BootSession, Machine, MachineMode, MachineStatus, Recovery
from diskvault.config import Settings
from diskvault.errors import DiskvaultError
from diskvault.targets.iqn import parse_portal
from diskvault.targets.models import Target
from diskvault.tools import ipxe

_HOST = re.compile(r"^[A-Za-z0-9.\-]+$|^\[[0-9A-Fa-f:.]+\]$")
MAX_CLIENTS = 10_000  # buckets kept before idle (full) ones are dropped


def split_host(host_header: str) -> tuple[str, int | None]:
    """``host[:port]`` or ``[v6][:port]`` from a Host header; host is "" if unusable."""
    text = host_header.strip()
    if text.startswith("["):
        host, _, rest = text.partition("]")
        host, port = host + "]", rest.removeprefix(":")
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, ""
    if not _HOST.match(host):
        host = ""
    return host, int(port) if port.isdigit() else None


def advertise_address(settings: Settings, host_header: str) -> str:
    """Where clients reach us: BOOT_ADVERTISE_ADDRESS, else the host they asked for.

    With neither usable, the portal's own address (unless it is a wildcard).
    """
    if settings.BOOT_ADVERTISE_ADDRESS:
        return settings.BOOT_ADVERTISE_ADDRESS
    host, _ = split_host(host_header)
    if host:
        return host
    ip, _ = parse_portal(settings.ISCSI_PORTAL)
    return "127.0.0.1" if ipaddress.ip_address(ip).is_unspecified else ip


def mac_key(mac: str) -> str:
    """One spelling per NIC (any case or separator), so a limit per MAC cannot be dodged."""
    try:
        return service.normalize_mac(mac)
    except InvalidMac:
        return mac.strip().lower()


class RateLimiter:
    """A token bucket per client: ``per_minute`` requests, refilled continuously."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, client: str) -> float:
        """0 if the request may go ahead, else the seconds until it may."""
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.get(client, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - at) * self.rate)
            if tokens < 1:
                self._buckets[client] = (tokens, now)
                return (1 - tokens) / self.rate
            self._buckets[client] = (tokens - 1, now)
            if len(self._buckets) > MAX_CLIENTS:
                self._prune(now)
            return 0.0

    def _prune(self, now: float) -> None:
        full = [
            c
            for c, (tokens, at) in self._buckets.items()
            if tokens + (now - at) * self.rate >= self.capacity
        ]
        for client in full:
            del self._buckets[client]


def _retry(settings: Settings, message: str, *, unknown: bool = False) -> str:
    chain = settings.BOOT_UNKNOWN_CHAIN_URL if unknown else None
    return ipxe.retry_script(message, settings.BOOT_UNKNOWN_RETRY_S, chain)


def _open_session(session: Session, machine: Machine, client: str | None) -> None:
    now = datetime.now(UTC)
    session.execute(
        update(BootSession)
        .where(BootSession.machine_id == machine.id, BootSession.ended_at.is_(None))
        .values(ended_at=now, end_reason="the machine asked for a new boot")
    )
    session.add(
        BootSession(
            machine_id=machine.id,
            started_at=now,
            client_address=client,
            initiator=machine.initiator_iqn,
            image_id=machine.image_id,
            version=machine.layer_version,
            mode=machine.mode,
        )
    )
    machine.last_boot_at = now
    session.commit()


def _recovery_script(session: Session, settings: Settings, rescue: Recovery, *, server: str) -> str:
    """Sanboot the restore point an instant recovery publishes for this MAC."""
    with service.machine_lock(rescue.id):
        try:
            target = recovery.serve(
                session, settings, rescue, fresh=rescue.mode == MachineMode.discard
            )
        except DiskvaultError as exc:
            return _retry(settings, f"recovery of {rescue.backup_id} cannot boot: {exc.message}")
        rescue.last_boot_at = datetime.now(UTC)
        session.commit()
    banner = (
        f"diskvault: instant recovery of restore point {rescue.backup_id} "
        f"({rescue.mode.value} mode)"
    )
    return _sanboot(target, server, rescue.initiator_iqn, banner)


def answer(
    session: Session, settings: Settings, mac: str, *, server: str, client: str | None
) -> str:
    """The iPXE script for a boot request; it always answers with a script.

    Each request opens a boot session; in discard mode it also recreates the
    machine's layer on the image's current version.
    """
    try:
        mac = service.normalize_mac(mac)
    except InvalidMac as exc:
        return _retry(settings, exc.message, unknown=True)
    if (rescue := recovery.for_mac(session, mac)) is not None:
        return _recovery_script(session, settings, rescue, server=server)
    machine = session.scalar(select(Machine).where(Machine.mac == mac))
    if machine is None:
        return _retry(
            settings,
            f"no machine has MAC {mac}; register it with: "
            f"diskvault machine add NAME --mac {mac} --image IMAGE",
            unknown=True,
        )
    with service.machine_lock(machine.id):
        session.refresh(machine)
        if machine.status == MachineStatus.APPLYING:
            return _retry(settings, f"{machine.name}: its writeback is being applied; waiting")
        free = writeback.free_bytes(settings)
        if free < settings.BOOT_WRITEBACK_MIN_FREE_BYTES:
            full = WritebackFull(
                path=str(settings.writeback_dir), free=free, detail="too little room to boot"
            )
            service.record_failure(session, machine, full)
            return _retry(settings, f"{machine.name} cannot boot: {full.message}")
        try:
            target = service.serve(
                session, settings, machine, fresh=machine.mode == MachineMode.discard
            )
        except DiskvaultError as exc:
            return _retry(settings, f"{machine.name} cannot boot: {exc.message}")
        _open_session(session, machine, client)
    return _machine_sanboot(machine, target, server)


def _machine_sanboot(machine: Machine, target: Target, server: str) -> str:
    banner = (
        f"diskvault: {machine.name} boots image version {machine.layer_version} "
        f"({machine.mode.value} mode)"
    )
    return _sanboot(target, server, machine.initiator_iqn, banner)


def _sanboot(target: Target, server: str, initiator_iqn: str, banner: str) -> str:
    _, port = parse_portal(target.portal)
    return ipxe.sanboot_script(
        server=server,
        port=port,
        lun=target.lun,
        iqn=target.iqn,
        initiator_iqn=initiator_iqn,
        banner=banner,
    )


def preview(session: Session, settings: Settings, machine: Machine, *, server: str) -> str:
    """The script ``machine`` gets at its next boot, without booting it (no session opened)."""
    target = service.target_of(session, machine)
    if target is None:
        return _retry(settings, f"{machine.name} has no disk yet ({machine.status.value})")
    return _machine_sanboot(machine, target, server)
