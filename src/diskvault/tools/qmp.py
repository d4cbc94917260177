"""A synchronous QMP client usable from any thread.

``qemu.qmp``'s async :class:`QMPClient` runs on a private event loop in a
daemon thread, and every call is submitted with ``run_coroutine_threadsafe``.
The legacy sync shim binds to the calling thread's loop instead, which breaks
when a server is started in one worker thread and driven from another.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from qemu.qmp import QMPClient
from qemu.qmp.error import QMPError
from qemu.qmp.qmp_client import ExecuteError

from diskvault.tools.process import ToolError

T = TypeVar("T")

DEFAULT_QMP_TIMEOUT = 30.0


class QsdError(ToolError):
    """A QMP command or the qemu-storage-daemon process failed."""

    template = "qemu-storage-daemon: {action} failed: {stderr}"
    tool_name = "qemu-storage-daemon"

    def __init__(
        self, detail: str | None = None, *, action: str = "command", **fields: Any
    ) -> None:
        #: QMP error class (``GenericError``, ``DeviceNotFound``...) when there is one.
        self.error_class: str = str(fields.pop("error_class", ""))
        super().__init__(detail, action=action, **fields)


class QmpConnection:
    """One QMP session on a unix socket, driven from synchronous code."""

    def __init__(self, socket_path: Path, *, name: str = "qsd") -> None:
        self.socket_path = socket_path
        self.name = name
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"qmp-{name}", daemon=True
        )
        self._thread.start()
        self._client: QMPClient | None = None

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def connect(self, timeout: float = 5.0) -> None:
        """Connect and negotiate capabilities; raise QsdError when refused."""

        async def _connect() -> QMPClient:
            # Created inside the loop: its queues and locks bind to that loop.
            client = QMPClient(self.name)
            await client.connect(str(self.socket_path))
            return client

        try:
            self._client = self._call(_connect(), timeout)
        except (QMPError, OSError, TimeoutError) as exc:
            raise QsdError(action="QMP connect", stderr=str(exc) or type(exc).__name__) from exc

    @property
    def connected(self) -> bool:
        return self._client is not None

    def execute(
        self, cmd: str, args: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> Any:
        """Run one QMP command and return its ``return`` value."""
        if self._client is None:
            raise QsdError(action=cmd, stderr="not connected to the QMP monitor")
        try:
            return self._call(
                self._client.execute(cmd, args or None), timeout or DEFAULT_QMP_TIMEOUT
            )
        except ExecuteError as exc:
            raise QsdError(action=cmd, stderr=str(exc), error_class=exc.error_class) from exc
        except (QMPError, OSError, TimeoutError) as exc:
            raise QsdError(action=cmd, stderr=str(exc) or type(exc).__name__) from exc

    def close(self) -> None:
        """Disconnect (ignoring a server that already went away) and stop the loop."""
        client, self._client = self._client, None
        if client is not None:
            # The daemon may have hung up first (e.g. after ``quit``).
            with contextlib.suppress(QMPError, OSError, EOFError, TimeoutError):
                self._call(client.disconnect(), 5.0)
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5.0)
        if not self._loop.is_running():
            self._loop.close()
