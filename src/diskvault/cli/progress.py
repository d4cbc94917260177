"""Job progress in the terminal: a rich bar driven by the job WebSocket."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from diskvault.cli.client import Client
from diskvault.cli.common import console, real
from diskvault.errors import DiskvaultError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress


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


def make_progress(
    target: Console | None = None, *, message: bool = False, disable: bool = False
) -> Progress:
    """One line per task at any terminal width, 80 columns included: the bar takes what
    the other columns leave, and text is cut with an ellipsis rather than wrapped."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )
    from rich.table import Column

    out = real(target or console)

    def cut(ratio: int | None = None) -> Column:
        return Column(no_wrap=True, overflow="ellipsis", ratio=ratio)

    narrow = out.width < 100
    columns: list[Any] = [
        TextColumn("[bold]{task.description}", table_column=cut()),
        BarColumn(bar_width=None, table_column=Column(ratio=2, min_width=10)),
        TaskProgressColumn(),
    ]
    if not narrow:
        columns.append(DownloadColumn())
    columns += [TransferSpeedColumn(), TimeRemainingColumn()]
    if message:
        columns.append(TextColumn("{task.fields[message]}", table_column=cut(ratio=1)))
    return Progress(*columns, console=out, disable=disable, expand=True)


def watch(client: Client, job_id: str, *, quiet: bool = False) -> dict[str, Any]:
    """Show a progress bar until the job ends; raise JobFailed unless it succeeded."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    final: dict[str, Any] | None = None
    with make_progress(message=True, disable=quiet) as bar:
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
