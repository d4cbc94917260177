"""``diskvault organize``: scan, find duplicates, plan, apply and roll back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from diskvault.cli.client import Client
from diskvault.cli.common import JSON, QUIET, console, emit, human_bytes, print_table, short_ids
from diskvault.cli.progress import watch

NAME = "organize"
app = typer.Typer(
    help="Organize a share or bucket: scan, duplicates, plan, apply, rollback. "
    "Example: diskvault organize scan file:///srv/share --wait"
)
ROWS = 50


def _start(client: Client, body: dict[str, Any]) -> dict[str, Any]:
    op: dict[str, Any] = client.post("/api/v1/operations", json=body)
    console.print(f"operation {op['id']} ({op['type']}) queued")
    return op


def _resolve(client: Client, op_id: str) -> str:
    return client.full_id("/api/v1/operations", op_id)


def _finish(client: Client, op_id: str) -> dict[str, Any]:
    watch(client, op_id)
    op: dict[str, Any] = client.get(f"/api/v1/operations/{op_id}")
    return op


def _items(client: Client, op_id: str, limit: int = ROWS) -> dict[str, Any]:
    page: dict[str, Any] = client.get(f"/api/v1/operations/{op_id}/items", params={"limit": limit})
    return page


def _show_items(client: Client, op: dict[str, Any], limit: int = ROWS) -> None:
    page = _items(client, op["id"], limit)
    title = f"{page['kind']} of {op['type']} {op['id'][:12]} ({page['total']} total)"
    rows: list[tuple[Any, ...]]
    if page["kind"] == "files":
        columns = ["key", "size", "category", "format", "virtual size", "note"]
        rows = [
            (
                i["key"],
                human_bytes(i["size"]),
                i["category"],
                i["format"],
                human_bytes(i["virtual_size"]) if i["virtual_size"] else "",
                i["note"],
            )
            for i in page["items"]
        ]
    elif page["kind"] == "actions":
        columns = ["#", "op", "source", "destination", "size", "note"]
        rows = [
            (
                i["seq"],
                i["op"],
                i["src"],
                i["dst"] or i["restore_from"],
                human_bytes(i["size"]),
                i["note"] or i["rule"],
            )
            for i in page["items"]
        ]
    else:
        columns = ["#", "op", "source", "destination", "size", "state", "error"]
        rows = [
            (i["seq"], i["op"], i["src"], i["dst"], human_bytes(i["size"]), i["state"], i["error"])
            for i in page["items"]
        ]
    print_table(title, columns, rows)


def _show_dupes(op: dict[str, Any]) -> None:
    summary = op.get("summary") or {}
    groups = summary.get("items", [])
    print_table(
        f"duplicate groups: {summary.get('groups', 0)}, "
        f"wasted {human_bytes(summary.get('wasted_bytes', 0))}",
        ["size", "copies", "wasted", "files"],
        [
            (
                human_bytes(g["size"]),
                len(g["keys"]),
                human_bytes(g["wasted_bytes"]),
                ", ".join(g["keys"][:4]) + (" ..." if len(g["keys"]) > 4 else ""),
            )
            for g in groups[:ROWS]
        ],
    )


def _summary(op: dict[str, Any]) -> None:
    summary = {k: v for k, v in (op.get("summary") or {}).items() if k != "items"}
    print_table(
        f"{op['type']} {op['id'][:12]}: {op['status']}",
        ["field", "value"],
        sorted(summary.items()),
    )


@app.command()
def scan(
    location: str = typer.Argument(..., help="file:///path or s3://bucket/prefix"),
    wait: bool = typer.Option(False, "--wait", help="show progress and the results"),
) -> None:
    """Scan a location: every file's size, mtime and category (from content).

    Example: diskvault organize scan file:///srv/share --wait
    """
    client = Client()
    op = _start(client, {"type": "scan", "location": location})
    if wait:
        op = _finish(client, op["id"])
        _summary(op)
        _show_items(client, op)


@app.command()
def dupes(
    location: str = typer.Option(None, "--location", help="scan this location now"),
) -> None:
    """Find duplicate files; without --location, show the latest result.

    Example: diskvault organize dupes --location file:///srv/share
    """
    client = Client()
    if location:
        op = _finish(client, _start(client, {"type": "dupes", "location": location})["id"])
    else:
        latest = client.get("/api/v1/operations", params={"type": "dupes", "limit": 1})["items"]
        if not latest:
            console.print("no duplicate scan yet: run with --location")
            raise typer.Exit(1)
        op = latest[0]
    _show_dupes(op)


@app.command()
def plan(
    rules: Path = typer.Argument(..., exists=True, dir_okay=False, help="YAML or JSON rules"),
    location: str = typer.Option(..., "--location", help="the location to organize"),
    destination: str = typer.Option(None, "--destination", help="default: the location"),
    dry_run: bool = typer.Option(True, "--dry-run/--no-dry-run", help="plans never change files"),
) -> None:
    """Compute what the rules would do and show it, touching nothing.

    Example: diskvault organize plan rules.yaml --location file:///srv/share --dry-run
    """
    client = Client()
    body = {
        "type": "plan",
        "location": location,
        "rules": rules.read_text(),
        "dry_run": dry_run,
        **({"destination": destination} if destination else {}),
    }
    op = _finish(client, _start(client, body)["id"])
    _summary(op)
    _show_items(client, op)
    console.print(f"apply it with: diskvault organize apply {op['id']}")


@app.command()
def apply(
    plan_id: str = typer.Argument(..., help="the plan's operation id (prefix works)"),
) -> None:
    """Apply a plan, journaling every file action (undo with rollback).

    Example: diskvault organize apply 3f2a9c
    """
    client = Client()
    body = {"type": "apply", "plan_id": _resolve(client, plan_id)}
    op = _finish(client, _start(client, body)["id"])
    _summary(op)


@app.command()
def dedupe(
    location: str = typer.Option(..., "--location"),
    strategy: str = typer.Option("quarantine", help="delete | hardlink | quarantine"),
    keep: str = typer.Option("oldest", help="oldest | newest | shortest | first"),
    dry_run: bool = typer.Option(False, "--dry-run", help="only plan the cleanup"),
) -> None:
    """Keep one file per duplicate group; delete, hard-link or quarantine the rest.

    Example: diskvault organize dedupe --location file:///srv/share --strategy hardlink
    """
    client = Client()
    body = {
        "type": "dedupe",
        "location": location,
        "strategy": strategy,
        "keep": keep,
        "dry_run": dry_run,
    }
    op = _finish(client, _start(client, body)["id"])
    _summary(op)
    if dry_run:
        _show_items(client, op)


@app.command("import")
def import_(location: str = typer.Option(..., "--location")) -> None:
    """Copy every disk image and ISO found in a location into the image library.

    Example: diskvault organize import --location file:///srv/share
    """
    client = Client()
    op = _finish(client, _start(client, {"type": "import", "location": location})["id"])
    _summary(op)


@app.command()
def rollback(op_id: str = typer.Argument(..., help="operation id (prefix works)")) -> None:
    """Undo an applied operation from its journal, newest action first.

    Example: diskvault organize rollback 3f2a9c
    """
    client = Client()
    op = client.post(f"/api/v1/operations/{_resolve(client, op_id)}/rollback")
    console.print(f"rollback {op['id']} queued")
    op = _finish(client, op["id"])
    _summary({**op, "summary": {k: v for k, v in op["summary"].items() if k != "problems"}})
    problems = op["summary"].get("problems") or []
    if problems:
        print_table(
            "not rolled back",
            ["file", "verdict", "detail"],
            [(p["key"], p["verdict"], p["detail"]) for p in problems],
        )


@app.command("list")
def list_(
    type_: str = typer.Option(None, "--type", help="scan|dupes|plan|apply|dedupe|import|rollback"),
    limit: int = typer.Option(20, "--limit"),
    as_json: bool = JSON,
    quiet: bool = QUIET,
) -> None:
    """List operations, newest first.

    Example: diskvault organize list --type apply
    """
    params: dict[str, Any] = {"limit": limit, **({"type": type_} if type_ else {})}
    page = Client().get("/api/v1/operations", params=params)
    emit(page, as_json=as_json, quiet=quiet, human=lambda: _list(page))


def _list(page: dict[str, Any]) -> None:
    ids = short_ids(page["items"])
    print_table(
        f"operations ({page['total']} total)",
        ["id", "type", "status", "location", "done", "message"],
        [
            (
                ids[o["id"]],
                o["type"],
                o["status"],
                o["location"],
                f"{o['percent']:.0f}%",
                (o["error"] or o["message"] or "")[:60],
            )
            for o in page["items"]
        ],
    )


@app.command()
def show(
    op_id: str = typer.Argument(..., help="operation id or a unique prefix (4+)"),
    as_json: bool = JSON,
    quiet: bool = QUIET,
) -> None:
    """Show an operation's summary and its files, actions or journal.

    Example: diskvault organize show 3f2a9c
    """
    client = Client()
    op = client.get(f"/api/v1/operations/{op_id}")
    if as_json or quiet:
        emit(op, as_json=as_json, quiet=quiet, human=lambda: None)
        return
    _summary(op)
    if op["type"] == "dupes":
        _show_dupes(op)
    else:
        _show_items(client, op)
