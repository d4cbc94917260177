"""Job progress in the terminal: a rich bar driven by the job WebSocket."""

from __future__ import annotations

import json
from typing import Any

from diskvault.cli.client import Client
from diskvault.cli.common import console, real
from diskvault.errors import DiskvaultError


class JobFailed(DiskvaultError):
    template = "job {id} {status}: {error}"
    exit_code = 8


def _ws_url(client: Client, job_id: str) -> str:
    base = client.url.replace("https://", "wss://").replace("http://", "ws://")
    return f"{base}/ws/jobs/{job_id}"


def bar_position(msg: dict[str, Any]) -> tuple[float, float]:
    """(total, completed) for one job message; a succeeded job fills the bar, because its
    last progress report may predate the final flush or checksum."""
    total = msg.get("bytes_total")
    if not total:
        total, done = 100, msg.get("percent") or 0
    else:
        done = msg.get("bytes_done") or 0
    if msg.get("status") == "succeeded":
        done = total
    return total, done


def watch(client: Client, job_id: str, *, quiet: bool = False) -> dict[str, Any]:
    """Show a progress bar until the job ends; raise JobFailed unless it succeeded."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    final: dict[str, Any] | None = None
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[message]}"),
    ]
    with Progress(*columns, console=real(console), disable=quiet, transient=False) as bar:
        task = bar.add_task(job_id[:8], total=None, message="")
        try:
            with connect(_ws_url(client, job_id), open_timeout=15) as ws:
                ws.send(json.dumps({"token": client.token}))
                for raw in ws:
                    msg = json.loads(raw)
                    if "status" not in msg:
                        raise JobFailed(id=job_id, status="unknown", error=msg.get("detail", msg))
                    total, done = bar_position(msg)
                    bar.update(task, total=total, completed=done)
                    bar.update(
                        task,
                        description=f"{msg['kind']} {job_id[:8]}",
                        message=msg.get("message") or msg["status"],
                    )
                    if msg["type"] in ("completed", "error", "cancelled"):
                        final = msg
        except ConnectionClosed as exc:
            if final is None:
                raise JobFailed(id=job_id, status="unwatchable", error=str(exc)) from None
    if final is None:
        final = client.get(f"/api/v1/jobs/{job_id}")
    if final["status"] != "succeeded":
        raise JobFailed(id=job_id, status=final["status"], error=final.get("error") or "")
    return final
