"""``diskvault jobs``: list, watch, cancel, stats."""

from __future__ import annotations

from typing import Any

import typer

from diskvault.cli.client import Client
from diskvault.cli.common import JSON, QUIET, console, emit, human_bytes, print_table, short_ids
from diskvault.cli.progress import watch as watch_job

app = typer.Typer(help="Background jobs. Example: diskvault jobs list --status running")


@app.command("list")
def list_(
    status: str = typer.Option(None, "--status", help="queued|running|succeeded|failed|cancelled"),
    kind: str = typer.Option(None, "--kind", help="job kind"),
    limit: int = typer.Option(20, "--limit"),
    as_json: bool = JSON,
    quiet: bool = QUIET,
) -> None:
    """List jobs, newest first.

    Example: diskvault jobs list --status failed
    """
    params = {
        "limit": limit,
        **({"status": status} if status else {}),
        **({"kind": kind} if kind else {}),
    }
    page = Client().get("/api/v1/jobs", params=params)
    emit(page, as_json=as_json, quiet=quiet, human=lambda: _list(page))


def _list(page: dict[str, Any]) -> None:
    ids = short_ids(page["items"])
    rows = [
        (
            ids[j["id"]],
            j["kind"],
            j["status"],
            f"{j['percent']:.0f}%",
            human_bytes(j["bytes_done"]) if j["bytes_total"] else "",
            j["ran_on"] or j["node"] or "",
            (j["error"] or j["message"] or "")[:60],
        )
        for j in page["items"]
    ]
    print_table(
        f"jobs ({page['total']} total)",
        ["id", "kind", "status", "done", "bytes", "node", "message"],
        rows,
    )


def _resolve(client: Client, job_id: str) -> str:
    return client.full_id("/api/v1/jobs", job_id)


@app.command()
def show(
    job_id: str = typer.Argument(..., help="job id or a unique prefix (4+)"),
    as_json: bool = JSON,
    quiet: bool = QUIET,
) -> None:
    """Show one job: its state, progress, result or error.

    Example: diskvault jobs show 3f2a9c
    """
    job = Client().get(f"/api/v1/jobs/{job_id}")
    emit(job, as_json=as_json, quiet=quiet, human=lambda: _show(job))


def _show(job: dict[str, Any]) -> None:
    fields = ("kind", "status", "percent", "message", "error", "created_at", "finished_at")
    rows = [(k, job.get(k)) for k in fields if job.get(k) is not None]
    rows.append(("result", job.get("result") or "-"))
    print_table(f"job {job['id']}", ["field", "value"], rows)


@app.command()
def watch(job_id: str = typer.Argument(..., help="job id (a unique prefix works)")) -> None:
    """Show a live progress bar until the job ends; non-zero exit if it failed.

    Example: diskvault jobs watch 3f2a9c
    """
    client = Client()
    final = watch_job(client, _resolve(client, job_id))
    console.print(f"job {final['id'][:12]} {final['status']}")


@app.command()
def cancel(job_id: str = typer.Argument(..., help="job id (a unique prefix works)")) -> None:
    """Cancel a queued or running job.

    Example: diskvault jobs cancel 3f2a9c
    """
    client = Client()
    job = client.post(f"/api/v1/jobs/{_resolve(client, job_id)}/cancel")
    console.print(f"job {job['id'][:12]}: cancel requested (status {job['status']})")


@app.command()
def stats() -> None:
    """Counts by status and kind, success rate, mean duration, queue length.

    Example: diskvault jobs stats
    """
    data = Client().get("/api/v1/jobs/stats")
    print_table("jobs by status", ["status", "count"], data["by_status"].items())
    console.print(
        f"success rate: {data['success_rate']}  mean duration: {data['mean_duration_s']}s  "
        f"queued: {data['queue_length']}"
    )
