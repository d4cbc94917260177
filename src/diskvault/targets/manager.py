"""The process-wide tgtd that diskvault starts itself when ``DISKVAULT_TGT_MANAGE=1``.

With TGT_MANAGE off, diskvault only talks to the tgtd on TGT_CONTROL_PORT
(e.g. the system's tgt service). With it on, :func:`ensure_tgtd` attaches to a
tgtd that already answers there, or starts one on ISCSI_PORTAL; the
reconciler calls it on every pass, so a tgtd that died is started again and
its targets are then re-created from the DB.

tgtd keeps nothing across restarts, so stopping a managed tgtd at shutdown
(which logs every initiator out) loses nothing the next start cannot rebuild.
"""

from __future__ import annotations

import contextlib
import threading

import structlog

from diskvault.config import Settings
from diskvault.targets.backends import TargetBackend, get_backend
from diskvault.targets.errors import BackendUnavailable
from diskvault.tools.process import ToolError
from diskvault.tools.tgt import Tgtadm, TgtdServer, TgtdUnreachable

log = structlog.get_logger("diskvault.targets")

_lock = threading.Lock()
_servers: dict[int, TgtdServer] = {}  # control port -> the tgtd this process started
# Control ports whose tgtd this process stopped for good (server shutdown): a
# reconcile pass still running must not start it again.
_stopped: set[int] = set()


def backend(settings: Settings) -> TargetBackend:
    """The configured backend; stateless, so cheap to build per call."""
    if settings.TARGET_BACKEND == "tgt":
        return get_backend(
            "tgt",
            control_port=settings.TGT_CONTROL_PORT,
            tgtadm=settings.TGTADM_PATH,
            timeout=settings.TARGET_BACKEND_TIMEOUT_S,
        )
    return get_backend("lio", timeout=settings.TARGET_BACKEND_TIMEOUT_S)


def managed(settings: Settings) -> bool:
    return settings.TARGET_BACKEND == "tgt" and settings.TGT_MANAGE


def _answers(settings: Settings) -> bool:
    tgtadm = Tgtadm(settings.TGT_CONTROL_PORT, binary=settings.TGTADM_PATH, timeout=5.0)
    try:
        tgtadm.show_sys()
    except TgtdUnreachable:
        return False
    return True


def ensure_tgtd(settings: Settings) -> bool:
    """Start tgtd if it is managed and not answering; True if it was (re)started."""
    if not managed(settings):
        return False
    port = settings.TGT_CONTROL_PORT
    with _lock:
        if port in _stopped or _answers(settings):
            return False
        old = _servers.pop(port, None)
        if old is not None:
            old.stop()  # reaps the dead process and removes its stale socket
        server = TgtdServer(
            port,
            portal=settings.ISCSI_PORTAL,
            binary=settings.TGTD_PATH,
            tgtadm_binary=settings.TGTADM_PATH,
        )
        try:
            server.start()
        except ToolError as exc:
            raise BackendUnavailable(
                f"starting tgtd on control port {port} failed: {exc.stderr or exc.message}",
                backend="tgt",
            ) from exc
        _servers[port] = server
    log.info("started tgtd", control_port=port, portal=settings.ISCSI_PORTAL)
    return True


def stopping(settings: Settings) -> bool:
    """True once :func:`stop_tgtd` ran here and :func:`start_tgtd` did not since."""
    return managed(settings) and settings.TGT_CONTROL_PORT in _stopped


def start_tgtd(settings: Settings) -> bool:
    """Server start-up: allow (re)starts again, and start tgtd if it is not running."""
    with _lock:
        _stopped.discard(settings.TGT_CONTROL_PORT)
    return ensure_tgtd(settings)


def stop_tgtd(settings: Settings) -> None:
    """Stop the tgtd this process started on the configured control port, if any."""
    with _lock:
        _stopped.add(settings.TGT_CONTROL_PORT)
        server = _servers.pop(settings.TGT_CONTROL_PORT, None)
        if server is not None:
            with contextlib.suppress(ToolError):
                server.stop()
    if server is not None:
        log.info("stopped tgtd", control_port=settings.TGT_CONTROL_PORT)
