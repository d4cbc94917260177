"""Running external tools: argument lists only, a timeout always, stderr kept.

Every tool module calls :func:`run` (short commands) or :class:`Process`
(long commands whose output is streamed, e.g. ``qemu-img convert -p``), and
maps failures to its own :class:`ToolError` subclass. Both start the child
through :func:`children.popen`, so it dies with the process that started it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar

from diskvault.errors import DiskvaultError
from diskvault.tools import children

DEFAULT_TIMEOUT = 60.0
TERM_GRACE = 3.0


class ToolError(DiskvaultError):
    """A tool exited non-zero, timed out, or is missing. ``stderr`` is kept."""

    template = "{tool} failed (exit {returncode}): {stderr}"
    status = 500
    exit_code = 10
    title = "External tool failed"
    tool_name: ClassVar[str] = "tool"

    def __init__(
        self,
        detail: str | None = None,
        *,
        cmd: Sequence[str] = (),
        returncode: int | None = None,
        stderr: str = "",
        **fields: object,
    ) -> None:
        self.cmd = list(cmd)
        self.returncode = returncode
        self.stderr = stderr.strip()
        tool = os.path.basename(self.cmd[0]) if self.cmd else self.tool_name
        super().__init__(
            detail,
            tool=tool,
            returncode=returncode,
            stderr=(self.stderr or detail or "no error output")[-2000:],
            **fields,
        )


class ToolTimeout(ToolError):
    template = "{tool} did not finish within {timeout:.0f}s and was killed"
    status = 504


class ToolMissing(ToolError):
    template = "{tool} is not installed or not executable ({path}); run scripts/install-system-deps"
    status = 503


class Cancelled(DiskvaultError):
    template = "cancelled"
    status = 409
    exit_code = 130
    title = "Cancelled"


@dataclass
class Result:
    cmd: list[str]
    returncode: int
    stdout: str
    stderr: str


def run(
    cmd: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    check: bool = True,
    error: type[ToolError] = ToolError,
    input: str | None = None,
    env: dict[str, str] | None = None,
    prlimit: Sequence[str] = (),
) -> Result:
    """Run ``cmd`` (a list, never a shell) and return its output.

    ``prlimit`` adds resource limits, e.g. ``["--cpu=30", "--as=1073741824"]``.
    """
    argv = [str(c) for c in cmd]
    full = ["prlimit", *prlimit, "--", *argv] if prlimit else argv
    try:
        proc = children.popen(
            full,
            stdin=subprocess.PIPE if input is not None else None,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
    except FileNotFoundError as exc:
        raise ToolMissing(cmd=argv, path=argv[0]) from exc
    try:
        stdout, stderr = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        proc.communicate()
        raise ToolTimeout(cmd=argv, timeout=timeout) from exc
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        children.forget(proc.pid)
    result = Result(argv, proc.returncode, stdout, stderr)
    if check and proc.returncode != 0:
        raise error(cmd=argv, returncode=proc.returncode, stderr=stderr or stdout)
    return result


class Process:
    """A long-running command with streamed output and cooperative cancellation.

    ``should_cancel`` is polled while waiting; when it returns True the process
    gets SIGTERM, then SIGKILL after ``TERM_GRACE`` seconds, and
    :class:`Cancelled` is raised.
    """

    def __init__(
        self,
        cmd: Sequence[str],
        *,
        timeout: float | None = None,
        error: type[ToolError] = ToolError,
        env: dict[str, str] | None = None,
    ) -> None:
        self.cmd = [str(c) for c in cmd]
        self.timeout = timeout
        self.error = error
        self.env = env
        self._stderr: list[str] = []
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        try:
            self.proc = children.popen(
                self.cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=self.env,
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise ToolMissing(cmd=self.cmd, path=self.cmd[0]) from exc
        assert self.proc.stderr is not None
        threading.Thread(target=self._drain, args=(self.proc.stderr,), daemon=True).start()

    def _drain(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self._stderr.append(line)
            if len(self._stderr) > 200:
                del self._stderr[:100]

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    def lines(self, sep: str = "\n") -> Iterator[str]:
        """Yield stdout split on ``sep`` (qemu-img -p uses ``\\r``)."""
        assert self.proc is not None and self.proc.stdout is not None
        buf = ""
        fd = self.proc.stdout.fileno()
        while True:
            # os.read returns what is there; TextIOWrapper.read(n) would wait for n characters
            # and deliver qemu-img's short progress lines only in bulk.
            chunk = (
                os.read(fd, 4096).decode(errors="replace")
                if sep != "\n"
                else self.proc.stdout.readline()
            )
            if not chunk:
                break
            buf += chunk
            while sep in buf or "\n" in buf:
                idx = min(i for i in (buf.find(sep), buf.find("\n")) if i >= 0)
                line, buf = buf[:idx], buf[idx + 1 :]
                if line.strip():
                    yield line
        if buf.strip():
            yield buf

    def stop(self) -> None:
        """SIGTERM the process group, then SIGKILL after a grace period."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(TERM_GRACE)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            pass
        children.forget(self.proc.pid)

    def wait(
        self,
        should_cancel: Callable[[], bool] | None = None,
        on_line: Callable[[str], None] | None = None,
        sep: str = "\n",
        poll: float = 0.2,
    ) -> Result:
        """Wait for exit, feeding stdout lines to ``on_line``; raise on failure."""
        if self.proc is None:
            self.start()
        assert self.proc is not None
        stop_flag = threading.Event()

        def watchdog() -> None:
            waited = 0.0
            while not stop_flag.wait(poll):
                waited += poll
                cancel = should_cancel is not None and should_cancel()
                timed_out = self.timeout is not None and waited > self.timeout
                if cancel or timed_out:
                    self._why = "cancel" if cancel else "timeout"
                    self.stop()
                    return

        self._why = ""
        watcher = threading.Thread(target=watchdog, daemon=True)
        watcher.start()
        out: list[str] = []
        try:
            for line in self.lines(sep):
                if on_line is not None:
                    on_line(line)
                else:
                    out.append(line)
            rc = self.proc.wait()
            children.forget(self.proc.pid)
        finally:
            stop_flag.set()
            watcher.join()
        if self._why == "cancel":
            raise Cancelled()
        if self._why == "timeout":
            raise ToolTimeout(cmd=self.cmd, timeout=self.timeout or 0)
        if rc != 0:
            raise self.error(cmd=self.cmd, returncode=rc, stderr=self.stderr)
        return Result(self.cmd, rc, "\n".join(out), self.stderr)
