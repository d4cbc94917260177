"""Boot verification: boot a restore point in a throw-away QEMU and judge it by its console.

The point's chain backs a new overlay in a private folder, attached to QEMU
as its disk directly (method ``direct``: no iSCSI, no network device at all,
so the guest cannot reach production). QEMU runs under ``prlimit`` with KVM
when ``/dev/kvm`` can be opened, else TCG. The judge reads the serial console
(and the BIOS debug port, where SeaBIOS prints "No bootable device"):

- **passed** when the source's ``boot_check`` pattern (default: a login
  prompt, systemd's "Reached target", a Windows boot manager) appears and no
  known failure screen does;
- **failed** on a failure screen, QEMU exiting, or the timeout.

A QMP ``screendump`` (PNG) is kept beside the point's sidecar whatever the
verdict. QEMU is killed and the folder removed when the check ends, passes,
fails or is cancelled; a crashed worker's leftovers go at the next start-up.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import structlog

from diskvault.backups import chain as chains
from diskvault.backups import repository as repo_files
from diskvault.backups import service as backups
from diskvault.backups.models import Backup, BackupSource
from diskvault.boot.errors import BootVerifyFailed, BootVerifyUnavailable
from diskvault.config import Settings
from diskvault.db.engine import session_scope
from diskvault.tools import qemu_img
from diskvault.tools.process import Cancelled, Process, ToolError
from diskvault.tools.qemu_system import QemuError
from diskvault.tools.qmp import QmpConnection, QsdError

log = structlog.get_logger("diskvault.boot")

DEFAULT_CHECK = r"login:|Reached target|Windows Boot Manager|Starting Windows"
FAILURES = (
    r"No bootable device",
    r"Boot failed",
    r"Kernel panic",
    r"not a bootable disk",
    r"STOP: 0x[0-9A-Fa-f]+",
    r"Your PC ran into a problem",
    r"INACCESSIBLE_BOOT_DEVICE",
)
VERIFY_BOOT_JOB = "backup-verify-boot"
METHOD = "direct"  # the overlay is QEMU's own disk: the fast path, no network at all
POLL_S = 0.2


@dataclass(frozen=True)
class Verdict:
    status: str  # passed / failed
    detail: str


def judge(console: str, bios: str, pattern: str, *, finished: str | None) -> Verdict | None:
    """The verdict on what the guest printed so far; None while it may still pass.

    ``finished`` says why no more output will come (QEMU exited, the timeout).
    """
    for text in (console, bios):
        for failure in FAILURES:
            if m := re.search(failure + r"[^\r\n]*", text):
                return Verdict("failed", f"failure screen: {m.group(0).strip()[:200]!r}")
    if m := re.search(pattern, console):
        return Verdict("passed", f"console matched {m.group(0)!r}")
    if finished is None:
        return None
    if not console.strip():
        return Verdict("failed", f"no console output {finished}")
    tail = console.strip().splitlines()[-1][-200:]
    return Verdict("failed", f"boot_check {pattern!r} not seen {finished}; last line: {tail!r}")


def work_root(settings: Settings) -> Path:
    return settings.DATA_DIR / "boot-verify"


def _accel(settings: Settings) -> str:
    if settings.BOOT_VERIFY_ACCEL != "auto":
        return settings.BOOT_VERIFY_ACCEL
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
    except OSError:
        return "tcg"
    os.close(fd)
    return "kvm"


def _binary(settings: Settings) -> str:
    found = shutil.which(settings.QEMU_SYSTEM_PATH)
    if found is None:
        raise BootVerifyUnavailable(
            detail=f"{settings.QEMU_SYSTEM_PATH} was not found; install the Debian package "
            "qemu-system-x86 (or set DISKVAULT_QEMU_SYSTEM_PATH)"
        )
    return found


def qemu_command(settings: Settings, binary: str, work: Path, accel: str) -> list[str]:
    memory = settings.BOOT_VERIFY_MEMORY_MB
    # Address space: guest RAM, TCG's translation cache and QEMU itself, with room.
    limit = (memory + 3072) * 1024 * 1024
    return [
        "prlimit", f"--as={limit}", "--core=0", "--nofile=1024", "--",
        binary,
        "-accel", accel,
        "-m", str(memory),
        "-display", "none",
        "-nic", "none",
        "-no-user-config",
        "-nodefaults",
        "-no-shutdown",  # a guest that powers off keeps its last screen for the screenshot
        "-vga", "std",
        "-serial", f"file:{work / 'console.log'}",
        "-chardev", f"file,id=bios,path={work / 'bios.log'}",
        "-device", "isa-debugcon,iobase=0x402,chardev=bios",
        "-qmp", f"unix:{work / 'qmp.sock'},server=on,wait=off",
        "-pidfile", str(work / "qemu.pid"),
        "-drive", f"file={work / 'overlay.qcow2'},format=qcow2,if=ide,index=0,media=disk",
        "-boot", "c",
    ]  # fmt: skip


@contextlib.contextmanager
def slot(settings: Settings, should_cancel: Callable[[], bool]) -> Iterator[None]:
    """One of BOOT_VERIFY_CONCURRENCY slots, shared by every process on this node."""
    root = work_root(settings) / "slots"
    root.mkdir(parents=True, exist_ok=True)
    while True:
        for i in range(settings.BOOT_VERIFY_CONCURRENCY):
            fh: IO[bytes] = open(root / f"slot-{i}", "ab")  # noqa: SIM115 - held while booting
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                continue
            try:
                yield
            finally:
                fh.close()
            return
        if should_cancel():
            raise Cancelled()
        time.sleep(POLL_S)


def _read(path: Path) -> str:
    try:
        return path.read_bytes()[-65536:].decode(errors="replace")
    except OSError:
        return ""


def _screendump(work: Path, dest: Path) -> bool:
    qmp = QmpConnection(work / "qmp.sock", name="verify")
    try:
        qmp.connect()
        partial = dest.with_name(dest.name + ".partial")
        qmp.execute("screendump", {"filename": str(partial), "format": "png"})
        os.replace(partial, dest)
        return True
    except (QsdError, OSError) as exc:
        log.warning("boot verification: no screenshot", error=str(exc))
        return False
    finally:
        qmp.close()


def boot_and_judge(
    settings: Settings,
    image: Path,
    work: Path,
    *,
    pattern: str,
    timeout: float,
    screenshot: Path,
    should_cancel: Callable[[], bool],
) -> dict[str, Any]:
    binary = _binary(settings)
    work.mkdir(parents=True, exist_ok=True)
    overlay = work / "overlay.qcow2"
    qemu_img.create(
        overlay, "qcow2", None, backing=image, backing_fmt="qcow2", binary=settings.QEMU_IMG_PATH
    )
    accel = _accel(settings)
    proc = Process(qemu_command(settings, binary, work, accel), error=QemuError)
    proc.start()
    started = time.monotonic()
    verdict: Verdict | None = None
    try:
        while verdict is None:
            if should_cancel():
                raise Cancelled()
            elapsed = time.monotonic() - started
            finished = None
            if proc.proc is not None and proc.proc.poll() is not None:
                finished = f"(QEMU exited after {elapsed:.0f} s: {proc.stderr.strip()[-300:]})"
            elif elapsed > timeout:
                finished = f"in {timeout:.0f} s"
            verdict = judge(
                _read(work / "console.log"), _read(work / "bios.log"), pattern, finished=finished
            )
            if verdict is None:
                time.sleep(POLL_S)
        shot = _screendump(work, screenshot)
    finally:
        proc.stop()
        shutil.rmtree(work, ignore_errors=True)
    return {
        "boot_status": verdict.status,
        "boot_detail": verdict.detail,
        "boot_method": f"{METHOD}/{accel}",
        "screenshot": shot,
        "seconds": round(time.monotonic() - started, 2),
    }


def _pattern(session: Any, point: Backup) -> tuple[str, float | None]:
    source = session.query(BackupSource).filter(BackupSource.name == point.vm_name).first()
    config = dict(source.config or {}) if source is not None else {}
    timeout = config.get("boot_timeout_s")
    return str(config.get("boot_check") or DEFAULT_CHECK), float(timeout) if timeout else None


def verify_point(
    settings: Settings, backup_id: str, job_id: str, should_cancel: Callable[[], bool]
) -> dict[str, Any]:
    """Boot-verify one restore point and record the verdict on it."""
    with session_scope(settings.DATABASE_URL) as s:
        point = backups.completed(s, backup_id, "boot-verified")
        image = chains.image_of(s, point)
        pattern, timeout = _pattern(s, point)
    try:
        re.compile(pattern)
    except re.error as exc:
        raise BootVerifyUnavailable(
            detail=f"the source's boot_check is not a regex: {exc}"
        ) from exc
    with slot(settings, should_cancel):
        try:
            result = boot_and_judge(
                settings,
                image,
                work_root(settings) / job_id,
                pattern=pattern,
                timeout=timeout or settings.BOOT_VERIFY_TIMEOUT_S,
                screenshot=repo_files.screenshot_path(image),
                should_cancel=should_cancel,
            )
        except ToolError as exc:
            result = {"boot_status": "failed", "boot_detail": exc.message, "boot_method": METHOD}
    with session_scope(settings.DATABASE_URL) as s:
        point = backups.get_backup(s, backup_id)
        point.boot_status = result["boot_status"]
        point.boot_detail = result["boot_detail"][:4000]
        point.boot_method = result["boot_method"]
        point.boot_checked_at = datetime.now(UTC)
    log.info("boot verification", backup=backup_id, **result)
    if result["boot_status"] != "passed":
        # The same alert path as a failed backup: the job fails with the reason.
        raise BootVerifyFailed(id=backup_id, detail=result["boot_detail"])
    return {"backup_id": backup_id, **result}


def cleanup_stale(settings: Settings) -> int:
    """Start-up: kill QEMUs a crashed worker left booting and remove their folders."""
    root = work_root(settings)
    if not root.is_dir():
        return 0
    killed = 0
    for work in root.iterdir():
        if work.name == "slots" or not work.is_dir():
            continue
        with contextlib.suppress(OSError, ValueError):
            pid = int((work / "qemu.pid").read_text().strip())
            if Path(f"/proc/{pid}/comm").read_text().startswith("qemu-system"):
                os.kill(pid, 9)
                killed += 1
        shutil.rmtree(work, ignore_errors=True)
    return killed
