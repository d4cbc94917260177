"""Block-layer commands over QMP: nodes, exports, dirty bitmaps and jobs.

:class:`BlockClient` works against any QMP monitor that has the block layer:
qemu-storage-daemon (:class:`diskvault.tools.qsd.QsdServer`) or a running VM's
monitor (the ``qmp`` backup source). Jobs are created with
``auto-dismiss: false`` so a failed job stays visible until
:meth:`BlockClient.wait_job` has read its error.
"""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from diskvault.tools.process import Cancelled
from diskvault.tools.qmp import QmpConnection, QsdError

SyncMode = Literal["full", "top", "none", "incremental", "bitmap"]
BitmapMode = Literal["on-success", "never", "always"]
Progress = Callable[[int, int], None]
MIN_POLL = 0.002


class QsdJobError(QsdError):
    template = "block job {job_id} failed: {stderr}"


class QsdJobTimeout(QsdError):
    template = "block job {job_id} did not finish within {timeout:.0f}s and was cancelled"
    status = 504


def _drop_none(args: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in args.items() if v is not None}


def backup_action(
    job_id: str,
    device: str,
    target: str,
    *,
    sync: SyncMode = "full",
    bitmap: str | None = None,
    bitmap_mode: BitmapMode = "on-success",
    speed: int | None = None,
    compress: bool = False,
) -> dict[str, Any]:
    """A ``blockdev-backup`` transaction action (also the plain command's args);
    ``compress`` writes compressed clusters (the target's compression_type)."""
    data = {
        "job-id": job_id,
        "device": device,
        "target": target,
        "sync": sync,
        "bitmap": bitmap,
        # Only sync=bitmap takes a mode; incremental implies on-success.
        "bitmap-mode": bitmap_mode if sync == "bitmap" else None,
        "speed": speed,
        "compress": compress or None,
        "auto-dismiss": False,
    }
    return {"type": "blockdev-backup", "data": _drop_none(data)}


def bitmap_add_action(node: str, name: str, *, persistent: bool = True) -> dict[str, Any]:
    return {
        "type": "block-dirty-bitmap-add",
        "data": {"node": node, "name": name, "persistent": persistent},
    }


def bitmap_clear_action(node: str, name: str) -> dict[str, Any]:
    return {"type": "block-dirty-bitmap-clear", "data": {"node": node, "name": name}}


class BlockClient:
    """Block-layer QMP commands over a session; :func:`connect` makes one."""

    def __init__(self, conn: QmpConnection | None = None) -> None:
        self._qmp = conn

    def close(self) -> None:
        conn, self._qmp = self._qmp, None
        if conn is not None:
            conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def qmp(
        self,
        cmd: str,
        args: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run a QMP command. Hyphenated argument names go in ``args``."""
        if self._qmp is None:
            raise QsdError(action=cmd, stderr="not connected (is the daemon running?)")
        return self._qmp.execute(cmd, {**(args or {}), **kwargs}, timeout=timeout)

    def transaction(self, actions: Sequence[Mapping[str, Any]]) -> None:
        """Apply actions atomically, e.g. clear a bitmap and start a backup."""
        self.qmp("transaction", actions=list(actions))

    # -- block nodes ---------------------------------------------------------

    def blockdev_add(
        self,
        node_name: str,
        driver: str = "qcow2",
        *,
        filename: Path | str,
        read_only: bool = False,
        backing: str | Literal[False] | None = None,
        **opts: Any,
    ) -> None:
        """Add a format node over a ``file`` node.

        ``backing``: None opens the chain named in the image header, a node
        name uses that node, False opens the image without its backing.
        """
        args: dict[str, Any] = {
            "driver": driver,
            "node-name": node_name,
            "read-only": read_only,
            "file": {"driver": "file", "filename": str(filename), "read-only": read_only},
            **opts,
        }
        if backing is not None:
            args["backing"] = backing or None
        self.qmp("blockdev-add", args)

    def blockdev_del(self, node_name: str) -> None:
        self.qmp("blockdev-del", {"node-name": node_name})

    def add_secret(self, secret_id: str, data: bytes) -> None:
        """A ``secret`` object for ``encrypt.key-secret``: the key goes over QMP, never
        onto a command line or into a file of ours."""
        args = {"qom-type": "secret", "id": secret_id, "format": "base64"}
        self.qmp("object-add", args, data=base64.b64encode(data).decode())

    def del_secret(self, secret_id: str) -> None:
        self.qmp("object-del", id=secret_id)

    def open_chain(
        self,
        files: Sequence[Path],
        prefix: str,
        *,
        encrypt: Mapping[str, Any] | None = None,
    ) -> str:
        """Open a backing chain read-only, one node per file (full first), each with
        ``encrypt`` options; returns the top node's name. Needed where the layers take
        options: an implicitly opened backing file gets none, so no secret."""
        below: str | Literal[False] = False
        for index, path in enumerate(files):
            node = f"{prefix}{index}"
            opts = {"encrypt": dict(encrypt)} if encrypt else {}
            self.blockdev_add(node, "qcow2", filename=path, read_only=True, backing=below, **opts)
            below = node
        assert below, "an empty chain"
        return below

    def close_chain(self, prefix: str, count: int) -> None:
        """Undo :meth:`open_chain`, top first."""
        for index in reversed(range(count)):
            with contextlib.suppress(QsdError):
                self.blockdev_del(f"{prefix}{index}")

    def query_node(self, node_name: str) -> dict[str, Any]:
        for node in self.qmp("query-named-block-nodes", flat=True):
            if node.get("node-name") == node_name:
                return dict(node)
        raise QsdError(action="query-named-block-nodes", stderr=f"no node {node_name!r}")

    # -- exports -------------------------------------------------------------

    def export_del(self, export_id: str, *, timeout: float = 10.0) -> None:
        """Remove an export and wait until QSD has really released it."""
        self.qmp("block-export-del", id=export_id)
        deadline = time.monotonic() + timeout
        while any(e["id"] == export_id for e in self.qmp("query-block-exports")):
            if time.monotonic() > deadline:
                raise QsdError(action="block-export-del", stderr=f"{export_id} is still in use")
            time.sleep(0.05)

    # -- dirty bitmaps -------------------------------------------------------

    def bitmap_remove(self, node: str, name: str) -> None:
        self.qmp("block-dirty-bitmap-remove", node=node, name=name)

    def query_bitmaps(self, node: str) -> list[dict[str, Any]]:
        """Bitmaps on ``node``: name, count (dirty bytes), granularity, persistent..."""
        return list(self.query_node(node).get("dirty-bitmaps", []))

    # -- block jobs ----------------------------------------------------------

    def blockdev_backup(
        self,
        job_id: str,
        device: str,
        target: str,
        *,
        sync: SyncMode = "full",
        bitmap: str | None = None,
        bitmap_mode: BitmapMode = "on-success",
        speed: int | None = None,
        compress: bool = False,
    ) -> None:
        action = backup_action(
            job_id,
            device,
            target,
            sync=sync,
            bitmap=bitmap,
            bitmap_mode=bitmap_mode,
            speed=speed,
            compress=compress,
        )
        self.qmp("blockdev-backup", action["data"])

    def _job(self, job_id: str) -> dict[str, Any] | None:
        return next((j for j in self.qmp("query-jobs") if j["id"] == job_id), None)

    def _cancel_job(self, job_id: str, timeout: float = 30.0) -> None:
        with contextlib.suppress(QsdError):
            self.qmp("job-cancel", id=job_id)
        deadline = time.monotonic() + timeout
        while (job := self._job(job_id)) is not None and time.monotonic() < deadline:
            if job["status"] == "concluded":
                self.qmp("job-dismiss", id=job_id)
                return
            time.sleep(0.05)

    def wait_job(
        self,
        job_id: str,
        *,
        progress: Progress | None = None,
        should_cancel: Callable[[], bool] | None = None,
        timeout: float | None = None,
        poll: float = 0.1,
    ) -> dict[str, Any]:
        """Poll ``query-jobs`` until the job concludes; dismiss it; raise on error.

        A job that reaches ``ready`` (active commit) is completed. Cancelling or
        timing out cancels the job and raises Cancelled / QsdJobTimeout.
        """
        started = time.monotonic()
        deadline = None if timeout is None else started + timeout
        last: tuple[int, int] | None = None
        while True:
            job = self._job(job_id)
            if job is None:
                raise QsdJobError(job_id=job_id, stderr="the job vanished (was it dismissed?)")
            done, total = int(job.get("current-progress", 0)), int(job.get("total-progress", 0))
            if progress is not None and (done, total) != last:
                progress(done, total)
                last = (done, total)
            status = job["status"]
            if status == "concluded":
                self.qmp("job-dismiss", id=job_id)
                if job.get("error"):
                    raise QsdJobError(job_id=job_id, stderr=job["error"])
                return job
            if status == "ready":
                self.qmp("job-complete", id=job_id)
            elif should_cancel is not None and should_cancel():
                self._cancel_job(job_id)
                raise Cancelled()
            elif deadline is not None and time.monotonic() > deadline:
                self._cancel_job(job_id)
                raise QsdJobTimeout(job_id=job_id, timeout=timeout)
            elapsed = time.monotonic() - started
            moving = status in ("created", "running", "waiting", "pending")
            time.sleep(_pace(poll, done, total, elapsed) if moving else poll)


def _pace(poll: float, done: int, total: int, elapsed: float) -> float:
    """How long to sleep before the next poll: ``poll``, but no longer than the job has
    run so far nor than it seems to have left at its rate so far, so that the end of
    a short job (a small incremental backup takes a few ms to a few hundred) is seen
    within ms rather than after a whole interval."""
    limit = min(poll, elapsed)
    if done > 0:
        limit = min(limit, (total - done) * elapsed / done)
    return max(MIN_POLL, limit)


def connect(socket_path: Path, *, name: str = "qmp", timeout: float = 5.0) -> BlockClient:
    """A client for an existing QMP socket, e.g. a running VM's monitor."""
    conn = QmpConnection(socket_path, name=name)
    try:
        conn.connect(timeout)
    except QsdError:
        conn.close()
        raise
    return BlockClient(conn)
