"""Child processes die with diskvault, and a previous run's leftovers are found at start-up.

- :func:`popen` starts every child from one long-lived thread, with
  ``PR_SET_PDEATHSIG`` set in the child (by ``setpriv --pdeathsig``, which then
  execs the tool). The kernel sends the signal when the
  *thread* that forked the child exits, not the process: a child started from a
  short-lived request thread would be killed when that thread retires, so all
  forks happen on ``dv-spawner``, which lives as long as the process.
- Each live child is recorded (pid, start time, argv, how to quit it) in
  ``<run dir>/children-<our pid>.json``. :func:`reap_orphans` reads the files of
  dead owners at start-up and stops what is still running, matched by all three,
  so a recycled pid is never hit. A QSD is asked to ``quit`` over QMP first, so
  its persistent bitmaps are written out.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import queue
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import structlog

log = structlog.get_logger("diskvault.children")

PR_SET_PDEATHSIG = 1

SETPRIV = shutil.which("setpriv")  # util-linux; --pdeathsig since 2.33

_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc.prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]

T = TypeVar("T")


def _deathsig_setup(sig: int, parent: int) -> Callable[[], None]:
    def setup() -> None:  # runs in the forked child: no imports, no locks
        _prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: the signal never comes
            os._exit(255)

    return setup


class _Spawner:
    """One daemon thread that runs every fork, so a child's parent thread outlives it."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def call(self, fn: Callable[[], T]) -> T:
        if threading.current_thread() is self._thread:
            return fn()
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="dv-spawner", daemon=True)
                self._thread.start()
        future: Future[T] = Future()
        self._queue.put((fn, future))
        return future.result()

    def _loop(self) -> None:
        while True:
            fn, future = self._queue.get()
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)


_spawner = _Spawner()


def popen(
    cmd: list[str], *, deathsig: int = signal.SIGKILL, quit_qmp: Path | None = None, **kw: Any
) -> subprocess.Popen[Any]:
    """``subprocess.Popen`` that dies with us (``deathsig``) and is recorded.

    ``quit_qmp``: the child's QMP socket, used to quit it cleanly if it is ever
    found orphaned.
    """
    path = (kw.get("env") or os.environ).get("PATH")
    if SETPRIV is not None and shutil.which(cmd[0], path=path) is None:
        # As Popen would: behind setpriv a missing tool would only be an exit code.
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", cmd[0])
    if SETPRIV is not None:
        # setpriv sets the signal and execs the tool (same pid). A preexec_fn would do
        # it in one exec less, but forces fork() instead of vfork(): with the GIL held
        # while a big server's page tables are copied, 100+ ms per tool under load.
        name = signal.Signals(deathsig).name.removeprefix("SIG")
        argv = [SETPRIV, "--pdeathsig", name, "--", *cmd]
    else:
        argv = list(cmd)
        kw["preexec_fn"] = _deathsig_setup(deathsig, os.getpid())
    proc: subprocess.Popen[Any] = _spawner.call(lambda: subprocess.Popen(argv, **kw))
    REGISTRY.record(proc.pid, cmd, quit_qmp=quit_qmp)
    return proc


def forget(pid: int) -> None:
    """The child was waited for: drop its record."""
    REGISTRY.forget(pid)


# -- /proc ---------------------------------------------------------------------


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0")[:-1]]


# -- the registry ----------------------------------------------------------------


class Registry:
    """This process's live children, rewritten to one small file on every change."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._children: dict[int, dict[str, Any]] = {}
        self.path: Path | None = None

    def configure(self, run_dir: Path | None) -> None:
        with self._lock:
            if run_dir is None:
                self.path = None
                return
            run_dir.mkdir(parents=True, exist_ok=True)
            self.path = run_dir / f"children-{os.getpid()}.json"
            self._write()

    def record(self, pid: int, argv: list[str], *, quit_qmp: Path | None = None) -> None:
        started = start_time(pid)
        if started is None:
            return
        entry: dict[str, Any] = {"pid": pid, "start": started, "argv": [str(a) for a in argv]}
        if quit_qmp is not None:
            entry["qmp"] = str(quit_qmp)
        with self._lock:
            self._children[pid] = entry
            self._write()

    def forget(self, pid: int) -> None:
        with self._lock:
            if self._children.pop(pid, None) is not None:
                self._write()

    def live(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._children.values())

    def _write(self) -> None:
        if self.path is None:
            return
        self._children = {
            pid: c for pid, c in self._children.items() if start_time(pid) == c["start"]
        }
        body = {"owner": {"pid": os.getpid(), "start": start_time(os.getpid())}}
        body["children"] = list(self._children.values())  # type: ignore[assignment]
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(body))
            os.replace(tmp, self.path)
        except OSError:
            log.warning("could not record child processes", path=str(self.path))


REGISTRY = Registry()
