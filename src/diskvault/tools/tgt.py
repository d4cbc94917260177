"""tgtd (the userspace iSCSI target) and tgtadm, its control tool.

tgtadm reports every failure with exit code 22 and a fixed English message, so
errors are told apart by that message (see ``_CLASSIFY``).

Things about tgtd that shape this module, found by running it:
- It ignores SIGTERM; ``tgtadm --op delete --mode system`` stops it, but only
  once no targets remain. :meth:`TgtdServer.stop` force-deletes the targets,
  asks it to exit, then SIGKILLs.
- When it cannot bind the requested portal it keeps running and listens on
  0.0.0.0:3260 and [::]:3260 instead, so :meth:`TgtdServer.start` checks the
  port first and verifies the portal list after start.
- CHAP passwords can only be passed on tgtadm's command line.
"""

from __future__ import annotations

import collections
import contextlib
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from diskvault.tools.process import Process, Result, ToolError, run

TGTD = "tgtd"
TGTADM = "tgtadm"
SOCKET_DIR = Path("/var/run/tgtd")
MAX_CONTROL_PORT = 32767  # tgtadm refuses larger -C values


class TgtError(ToolError):
    tool_name = "tgtadm"


class TgtNoSuchObject(TgtError):
    """A target, LUN, account or ACL that does not exist."""

    status = 404


class TgtAlreadyExists(TgtError):
    status = 409


class TgtStillActive(TgtError):
    """The target has logged-in initiators."""

    status = 409


class TgtdUnreachable(TgtError):
    """No tgtd answers on the control port."""

    status = 503


_CLASSIFY: tuple[tuple[str, type[TgtError]], ...] = (
    ("tgt daemon", TgtdUnreachable),
    ("can't find", TgtNoSuchObject),
    ("does not exist", TgtNoSuchObject),
    ("already exists", TgtAlreadyExists),
    ("still active", TgtStillActive),
)


@dataclass
class TgtNexus:
    """One logged-in initiator (an I_T nexus is tgt's session)."""

    nexus_id: int
    initiator: str
    addresses: list[str] = field(default_factory=list)


@dataclass
class TgtLun:
    lun: int
    type: str
    backing_path: str | None


@dataclass
class TgtTarget:
    tid: int
    iqn: str
    state: str = ""
    nexuses: list[TgtNexus] = field(default_factory=list)
    luns: list[TgtLun] = field(default_factory=list)
    accounts: list[str] = field(default_factory=list)
    outgoing_account: str | None = None
    acls: list[str] = field(default_factory=list)


@dataclass
class TgtConnection:
    session: int
    cid: int
    initiator: str
    address: str


def parse_targets(text: str) -> list[TgtTarget]:
    """Parse ``tgtadm --lld iscsi --op show --mode target``."""
    targets: list[TgtTarget] = []
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if raw.startswith("Target "):
            head, _, iqn = line.partition(": ")
            targets.append(TgtTarget(tid=int(head.split()[1]), iqn=iqn))
            continue
        if not targets:
            continue
        target = targets[-1]
        if line.endswith("information:"):
            section = line.removesuffix(" information:")
            continue
        key, _, value = line.partition(": ")
        if section == "System" and key == "State":
            target.state = value
        elif section == "I_T nexus" and key == "I_T nexus":
            target.nexuses.append(TgtNexus(int(value), ""))
        elif section == "I_T nexus" and key == "Initiator" and target.nexuses:
            target.nexuses[-1].initiator = value.split(" alias:")[0]
        elif section == "I_T nexus" and key == "IP Address" and target.nexuses:
            target.nexuses[-1].addresses.append(value)
        elif section == "LUN" and key == "LUN":
            target.luns.append(TgtLun(int(value), "", None))
        elif section == "LUN" and key == "Type" and target.luns:
            target.luns[-1].type = value
        elif section == "LUN" and key == "Backing store path" and target.luns:
            target.luns[-1].backing_path = None if value == "None" else value
        elif section == "Account":
            if line.endswith(" (outgoing)"):
                target.outgoing_account = line.removesuffix(" (outgoing)")
            else:
                target.accounts.append(line)
        elif section == "ACL":
            target.acls.append(line)
    return targets


def parse_connections(text: str) -> list[TgtConnection]:
    """Parse ``tgtadm --lld iscsi --op show --mode conn --tid N``."""
    conns: list[TgtConnection] = []
    session = 0
    for raw in text.splitlines():
        key, _, value = raw.strip().partition(": ")
        if key == "Session":
            session = int(value)
        elif key == "Connection":
            conns.append(TgtConnection(session, int(value), "", ""))
        elif key == "Initiator" and conns:
            conns[-1].initiator = value.split(" alias:")[0]
        elif key == "IP Address" and conns:
            conns[-1].address = value
    return conns


def parse_portals(text: str) -> list[str]:
    """``Portal: 127.0.0.1:3260,1`` lines to ``127.0.0.1:3260`` (the ,N is the TPG)."""
    return [
        line.split(": ", 1)[1].rsplit(",", 1)[0]
        for line in text.splitlines()
        if line.startswith("Portal: ")
    ]


def _redact(cmd: list[str]) -> list[str]:
    return [
        "***" if prev == "--password" else arg
        for prev, arg in zip(["", *cmd[:-1]], cmd, strict=True)
    ]


class Tgtadm:
    """tgtadm bound to one tgtd control port (``-C``)."""

    def __init__(self, control_port: int, binary: str = TGTADM, timeout: float = 10.0) -> None:
        if not 0 <= control_port <= MAX_CONTROL_PORT:
            raise ValueError(f"tgtd control ports are 0-{MAX_CONTROL_PORT}, not {control_port}")
        self.control_port = control_port
        self.binary = binary
        self.timeout = timeout

    def _run(self, *args: str, lld: bool = True) -> Result:
        cmd = [self.binary, "-C", str(self.control_port)]
        if lld:
            cmd += ["--lld", "iscsi"]
        try:
            return run([*cmd, *args], timeout=self.timeout, error=TgtError)
        except ToolError as exc:
            # The error keeps the command line, which may hold a CHAP password.
            exc.cmd = _redact(exc.cmd)
            if type(exc) is not TgtError:
                raise exc from None
            cls = next((c for needle, c in _CLASSIFY if needle in exc.stderr), TgtError)
            raise cls(cmd=exc.cmd, returncode=exc.returncode, stderr=exc.stderr) from None

    def _op(self, op: str, mode: str, *args: str | int, lld: bool = True) -> str:
        return self._run("--op", op, "--mode", mode, *map(str, args), lld=lld).stdout

    def show_sys(self) -> str:
        return self._op("show", "sys", lld=False)

    def delete_system(self) -> None:
        """Ask tgtd to exit; refused while any target exists."""
        self._op("delete", "system", lld=False)

    def show_targets(self) -> list[TgtTarget]:
        return parse_targets(self._op("show", "target"))

    def show_connections(self, tid: int) -> list[TgtConnection]:
        return parse_connections(self._op("show", "conn", "--tid", tid))

    def show_portals(self) -> list[str]:
        return parse_portals(self._op("show", "portal"))

    def show_accounts(self) -> list[str]:
        lines = self._op("show", "account").splitlines()[1:]  # [0] is "Account list:"
        return [line.strip() for line in lines if line.strip()]

    def new_target(self, tid: int, iqn: str) -> None:
        self._op("new", "target", "--tid", tid, "--targetname", iqn)

    def delete_target(self, tid: int, force: bool = False) -> None:
        self._op("delete", "target", "--tid", tid, *(["--force"] if force else []))

    def new_lun(
        self,
        tid: int,
        lun: int,
        path: str | os.PathLike[str],
        bstype: str = "rdwr",
        bsoflags: str | None = None,
    ) -> None:
        """Add a LUN backed by ``path``; ``bsoflags`` is ``sync``, ``direct`` or both."""
        extra = ["--bsoflags", bsoflags] if bsoflags else []
        backing = ["--backing-store", os.fspath(path), "--bstype", bstype, *extra]
        self._op("new", "logicalunit", "--tid", tid, "--lun", lun, *backing)

    def bind_initiator_name(self, tid: int, initiator: str, unbind: bool = False) -> None:
        """Allow (or with ``unbind`` stop allowing) the initiator named ``initiator``."""
        op = "unbind" if unbind else "bind"
        self._op(op, "target", "--tid", tid, "--initiator-name", initiator)

    def bind_address(self, tid: int, address: str = "ALL", unbind: bool = False) -> None:
        """Allow logins from ``address`` (an IP, a CIDR, or ALL)."""
        op = "unbind" if unbind else "bind"
        self._op(op, "target", "--tid", tid, "--initiator-address", address)

    def new_account(self, user: str, password: str) -> None:
        self._op("new", "account", "--user", user, "--password", password)

    def delete_account(self, user: str) -> None:
        self._op("delete", "account", "--user", user)

    def bind_account(
        self, tid: int, user: str, outgoing: bool = False, unbind: bool = False
    ) -> None:
        """Require CHAP as ``user`` (incoming), or answer mutual CHAP as it (outgoing)."""
        op = "unbind" if unbind else "bind"
        extra = ["--outgoing"] if outgoing else []
        self._op(op, "account", "--tid", tid, "--user", user, *extra)


def _split_portal(portal: str) -> tuple[str, int]:
    host, _, port = portal.rpartition(":")
    return host.strip("[]"), int(port)


def _port_is_free(portal: str) -> bool:
    host, port = _split_portal(portal)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class TgtdServer:
    """A foreground tgtd with its own control port and one iSCSI portal."""

    def __init__(
        self,
        control_port: int,
        portal: str = "127.0.0.1:3260",
        binary: str = TGTD,
        tgtadm_binary: str = TGTADM,
        start_timeout: float = 10.0,
    ) -> None:
        self.control_port = control_port
        self.portal = portal
        self.binary = binary
        self.start_timeout = start_timeout
        self.tgtadm = Tgtadm(control_port, binary=tgtadm_binary, timeout=5.0)
        self._process: Process | None = None
        self._owns_socket = False

    def _fail(self, why: str) -> TgtError:
        stderr = self._process.stderr if self._process else ""
        self._kill()
        return TgtError(why, cmd=[self.binary], stderr=f"{why}\n{stderr}")

    def start(self) -> None:
        if self.is_running():
            return
        with contextlib.suppress(TgtdUnreachable):
            self.tgtadm.show_sys()
            raise TgtError(
                f"control port {self.control_port} is used by another tgtd; pick another",
                cmd=[self.binary],
            )
        if not _port_is_free(self.portal):
            raise TgtError(f"portal {self.portal} is already in use", cmd=[self.binary])
        cmd = [self.binary, "-f", "-C", str(self.control_port), "--iscsi", f"portal={self.portal}"]
        self._process = process = Process(cmd, error=TgtError)
        process.start()
        # stdout is a pipe nobody else reads; drain it so tgtd never blocks on it.
        threading.Thread(target=collections.deque, args=(process.lines(), 0), daemon=True).start()
        deadline = time.monotonic() + self.start_timeout
        while True:
            if not self.is_running():
                raise self._fail("tgtd exited during start")
            try:
                portals = self.tgtadm.show_portals()
                break
            except TgtdUnreachable:
                if time.monotonic() > deadline:
                    raise self._fail(
                        f"tgtd did not answer within {self.start_timeout:.0f}s"
                    ) from None
                time.sleep(0.05)
        self._owns_socket = True
        if portals != [self.portal]:
            raise self._fail(f"tgtd listens on {portals} instead of {self.portal}")

    def is_running(self) -> bool:
        proc = self._process.proc if self._process else None
        return proc is not None and proc.poll() is None

    def stop(self) -> None:
        """Delete all targets (logging initiators out), ask tgtd to exit, then kill."""
        if self.is_running():
            with contextlib.suppress(ToolError):
                for target in self.tgtadm.show_targets():
                    self.tgtadm.delete_target(target.tid, force=True)
                self.tgtadm.delete_system()
        self._kill()

    def _kill(self) -> None:
        if self._process is not None:
            self._process.stop()
        if not self._owns_socket:
            return
        self._owns_socket = False
        # tgtd leaves its control socket and lock file behind.
        for name in (f"socket.{self.control_port}", f"socket.{self.control_port}.lock"):
            with contextlib.suppress(FileNotFoundError):
                (SOCKET_DIR / name).unlink()

    def __enter__(self) -> TgtdServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
