"""libiscsi initiator helpers: list targets, read or compare a LUN, hold a session.

Userspace only (libiscsi through iscsi-ls and QEMU's iscsi driver from
qemu-block-extra), so they work without kernel iSCSI modules; tests and bench
scripts use them to check what a target serves.

CHAP secrets never appear on a command line: iscsi-ls gets them through
``LIBISCSI_CHAP_PASSWORD`` and QEMU through a ``secret`` object read from a
0600 file that is removed afterwards.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Protocol
from urllib.parse import quote

from diskvault.tools import children
from diskvault.tools.process import ToolError, ToolMissing, ToolTimeout, run

ISCSI_LS = "iscsi-ls"
QEMU_IMG = "qemu-img"
QEMU_IO = "qemu-io"
SECRET_ID = "iscsi-chap"


class IscsiError(ToolError):
    tool_name = "iscsi"


class ChapCredentials(Protocol):
    """Anything with ``user`` and ``secret``, e.g. :class:`diskvault.targets.backends.Chap`."""

    @property
    def user(self) -> str: ...

    @property
    def secret(self) -> str: ...


@dataclass
class DiscoveredLun:
    lun: int
    type: str
    size: str | None = None


@dataclass
class DiscoveredTarget:
    iqn: str
    portal: str
    luns: list[DiscoveredLun] = field(default_factory=list)


def parse_iscsi_ls(text: str) -> list[DiscoveredTarget]:
    """Parse ``iscsi-ls -s``: ``Target:<iqn> Portal:<ip:port>,<tpg>`` then ``Lun:N Type:T``."""
    targets: list[DiscoveredTarget] = []
    for line in text.splitlines():
        if line.startswith("Target:"):
            name, _, portal = line.removeprefix("Target:").partition(" Portal:")
            targets.append(DiscoveredTarget(name, portal.rsplit(",", 1)[0]))
        elif line.startswith("Lun:") and targets:
            lun_part, _, type_part = line.partition("Type:")
            kind, _, size = type_part.partition(" (Size:")
            lun = DiscoveredLun(int(lun_part.removeprefix("Lun:")), kind.strip())
            lun.size = size.rstrip(")") or None
            targets[-1].luns.append(lun)
    return targets


def iscsi_ls(
    portal: str,
    initiator_name: str,
    chap: ChapCredentials | None = None,
    *,
    binary: str = ISCSI_LS,
    timeout: float = 30.0,
) -> list[DiscoveredTarget]:
    """Discover the targets ``initiator_name`` may see at ``portal``, with their LUNs.

    Listing LUNs logs in to each target, so a refused login fails the call.
    """
    env = None
    user = ""
    if chap is not None:
        env = {**os.environ, "LIBISCSI_CHAP_PASSWORD": chap.secret}
        user = f"{quote(chap.user, safe='')}@"
    result = run(
        [binary, "-i", initiator_name, "-s", f"iscsi://{user}{portal}"],
        timeout=timeout,
        env=env,
        error=IscsiError,
    )
    return parse_iscsi_ls(result.stdout)


def _opt(value: str | int) -> str:
    # QEMU option syntax escapes a comma by doubling it.
    return str(value).replace(",", ",,")


def image_opts(
    portal: str, iqn: str, lun: int, initiator_name: str, chap: ChapCredentials | None = None
) -> str:
    """``--image-opts`` for QEMU's iscsi driver; CHAP refers to the :data:`SECRET_ID` object."""
    opts: dict[str, str | int] = {
        "driver": "iscsi",
        "transport": "tcp",
        "portal": portal,
        "target": iqn,
        "lun": lun,
        "initiator-name": initiator_name,
    }
    if chap is not None:
        opts |= {"user": chap.user, "password-secret": SECRET_ID}
    return ",".join(f"{key}={_opt(value)}" for key, value in opts.items())


@contextlib.contextmanager
def secret_object(chap: ChapCredentials | None) -> Iterator[list[str]]:
    """QEMU ``--object`` arguments holding the CHAP secret, from a private file."""
    if chap is None:
        yield []
        return
    with tempfile.TemporaryDirectory(prefix="diskvault-chap-") as tmp:
        path = Path(tmp) / "secret"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(chap.secret)
        yield ["--object", f"secret,id={SECRET_ID},file={_opt(str(path))}"]


def read_lun(
    portal: str,
    iqn: str,
    lun: int,
    out_path: str | os.PathLike[str],
    initiator_name: str,
    chap: ChapCredentials | None = None,
    *,
    out_format: str = "raw",
    binary: str = QEMU_IMG,
    timeout: float = 600.0,
) -> Path:
    """Copy a LUN into ``out_path`` with ``qemu-img convert`` (via ``.partial``, then rename)."""
    out = Path(out_path)
    partial = out.with_name(out.name + ".partial")
    source = image_opts(portal, iqn, lun, initiator_name, chap)
    with secret_object(chap) as obj:
        cmd = [binary, "convert", *obj, "--image-opts", source, "-O", out_format, str(partial)]
        try:
            run(cmd, timeout=timeout, error=IscsiError)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    fd = os.open(partial, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    partial.rename(out)
    return out


def compare_lun(
    portal: str,
    iqn: str,
    lun: int,
    image: str | os.PathLike[str],
    initiator_name: str,
    chap: ChapCredentials | None = None,
    *,
    image_format: str = "raw",
    binary: str = QEMU_IMG,
    timeout: float = 600.0,
) -> bool:
    """True if the LUN and ``image`` hold the same data (``qemu-img compare``)."""
    local = f"driver={_opt(image_format)},file.filename={_opt(os.fspath(image))}"
    remote = image_opts(portal, iqn, lun, initiator_name, chap)
    with secret_object(chap) as obj:
        cmd = [binary, "compare", *obj, "--image-opts", local, remote]
        result = run(cmd, timeout=timeout, check=False, error=IscsiError)
    if result.returncode in (0, 1):
        return result.returncode == 0
    raise IscsiError(cmd=cmd, returncode=result.returncode, stderr=result.stderr)


@contextlib.contextmanager
def _kill_after(proc: subprocess.Popen[str], seconds: float) -> Iterator[threading.Event]:
    killed = threading.Event()

    def kill() -> None:
        killed.set()
        proc.kill()

    timer = threading.Timer(seconds, kill)
    timer.start()
    try:
        yield killed
    finally:
        timer.cancel()


class IscsiSession:
    """An iSCSI login held open by an idle ``qemu-io`` until :meth:`stop`.

    Used to observe a connected initiator (status, delete refusal). Readiness:
    ``length`` is answered only after the login succeeded.
    """

    def __init__(
        self,
        portal: str,
        iqn: str,
        lun: int,
        initiator_name: str,
        chap: ChapCredentials | None = None,
        *,
        binary: str = QEMU_IO,
        timeout: float = 30.0,
    ) -> None:
        self.opts = image_opts(portal, iqn, lun, initiator_name, chap)
        self.chap = chap
        self.binary = binary
        self.timeout = timeout
        self._proc: subprocess.Popen[str] | None = None
        self._secret: contextlib.ExitStack | None = None

    def start(self) -> None:
        stack = contextlib.ExitStack()
        obj = stack.enter_context(secret_object(self.chap))
        cmd = [self.binary, *obj, "--image-opts", self.opts]
        try:
            self._proc = children.popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            stack.close()
            raise ToolMissing(cmd=cmd, path=cmd[0]) from exc
        self._secret = stack
        try:
            assert self._proc.stdin is not None
            self._proc.stdin.write("length\n")
            self._proc.stdin.flush()
            if self._readline():
                return
            self._proc.wait(self.timeout)
            stderr = self._proc.stderr.read() if self._proc.stderr else ""
            raise IscsiError(cmd=cmd, returncode=self._proc.returncode, stderr=stderr)
        except BaseException:
            self.stop()
            raise

    def _readline(self) -> str:
        """One stdout line, or "" at EOF; kills qemu-io if it takes too long."""
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        # A blocked readline cannot time out; a timer kills the process instead.
        with _kill_after(proc, self.timeout) as killed:
            line = proc.stdout.readline()
        if killed.is_set():
            raise ToolTimeout(cmd=[self.binary], timeout=self.timeout)
        return line

    def stop(self) -> None:
        """Close stdin (qemu-io quits and logs out), then kill if it lingers."""
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(OSError):
                if proc.stdin:
                    proc.stdin.close()
            try:
                proc.wait(self.timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            children.forget(proc.pid)
            for stream in (proc.stdout, proc.stderr):
                if stream:
                    stream.close()
        if self._secret is not None:
            self._secret.close()
            self._secret = None

    def __enter__(self) -> IscsiSession:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
