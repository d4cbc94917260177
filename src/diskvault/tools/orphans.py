"""Children that dead diskvault processes left behind: found in their records under
``DATA_DIR/run`` and stopped (QMP ``quit`` first, so a daemon saves its bitmaps, then
SIGTERM, then SIGKILL). Separate from :mod:`children` because quitting speaks QMP,
which itself runs on the process layer that records children."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import structlog

from diskvault.tools import children, qmp_block
from diskvault.tools.qmp import QsdError

log = structlog.get_logger("diskvault.children")

QUIT_WAIT = 5.0
TERM_WAIT = 3.0


def _alive(entry: dict[str, Any]) -> bool:
    return children.start_time(int(entry["pid"])) == entry["start"]


def _is_orphan(entry: dict[str, Any]) -> bool:
    return _alive(entry) and children.cmdline(int(entry["pid"])) == entry["argv"]


def _wait_gone(entry: dict[str, Any], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(entry):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _quit_over_qmp(entry: dict[str, Any]) -> bool:
    try:
        with qmp_block.connect(Path(entry["qmp"]), name="orphan", timeout=2.0) as client:
            client.qmp("quit", timeout=2.0)
    except (QsdError, OSError):
        return False
    return _wait_gone(entry, QUIT_WAIT)


def stop_orphan(entry: dict[str, Any]) -> str:
    """Stop one orphan; returns how it went (``qmp quit``, ``SIGTERM``, ``SIGKILL``)."""
    if entry.get("qmp") and _quit_over_qmp(entry):
        return "qmp quit"
    pid = int(entry["pid"])
    for sig, wait in ((signal.SIGTERM, TERM_WAIT), (signal.SIGKILL, TERM_WAIT)):
        if not _is_orphan(entry):
            return "exited"
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if _wait_gone(entry, wait):
            return signal.Signals(sig).name
    return "still running"


def _owner_alive(body: dict[str, Any]) -> bool:
    """True for a live process's file (ours included): a recycled pid has another start time."""
    owner = body.get("owner") or {}
    pid = owner.get("pid")
    return isinstance(pid, int) and children.start_time(pid) == owner.get("start")


def reap_orphans(run_dir: Path) -> list[dict[str, Any]]:
    """Stop children that dead diskvault processes left behind; report each one.

    Call before :meth:`Registry.configure`: a recycled pid would overwrite its file.
    """
    stopped: list[dict[str, Any]] = []
    for path in sorted(run_dir.glob("children-*.json")):
        try:
            body = json.loads(path.read_text())
        except (OSError, ValueError):
            path.unlink(missing_ok=True)
            continue
        if _owner_alive(body):
            continue
        for entry in body.get("children", []):
            if not _is_orphan(entry):
                continue
            how = stop_orphan(entry)
            report = {"pid": entry["pid"], "argv": entry["argv"], "stopped_by": how}
            log.warning("stopped a child process left by a previous run", **report)
            stopped.append(report)
        path.unlink(missing_ok=True)
    return stopped
