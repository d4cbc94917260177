"""``diskvault recovery`` and ``diskvault backup boot|verify-boot|show``: instant recovery.

Mounted by :mod:`diskvault.cli.boot` (the boot domain's CLI).
"""

from __future__ import annotations

from typing import Any

import typer

from diskvault.cli import backups as backups_cli
from diskvault.cli.client import Client
from diskvault.cli.common import (
    JSON,
    QUIET,
    console,
    emit,
    human_bytes,
    print_table,
    short_ids,
    show_object,
)
from diskvault.cli.progress import watch
from diskvault.errors import NotFound

app = typer.Typer(
    help="Instant recoveries: restore points booted in place. Example: diskvault recovery list"
)


def _recovery(client: Client, ref: str) -> str:
    items = client.get("/api/v1/recoveries", params={"limit": 1000})["items"]
    hits = [
        r["id"]
        for r in items
        if r["id"].startswith(ref) or r["mac"] == ref.lower() or r["machine"] == ref
    ]
    if len(hits) != 1:
        raise NotFound(f"no single recovery matches {ref!r}; see diskvault recovery list")
    return hits[0]


def _show(rec: dict[str, Any]) -> None:
    who = rec["machine"] or f"temporary machine {rec['mac']}"
    console.print(
        f"recovery {rec['id']}: restore point {rec['backup_id']} boots on {who} "
        f"({rec['mode']} mode); PXE-boot MAC {rec['mac']} to start it",
        highlight=False,
    )


def boot(
    backup_id: str = typer.Argument(..., help="restore point id (or a unique prefix)"),
    mac: str = typer.Option(None, "--mac", help="boot it on this MAC (a temporary machine)"),
    machine: str = typer.Option(None, "--machine", help="boot it on this machine (name or id)"),
    mode: str = typer.Option("keep", "--mode", help="keep | discard (each boot starts afresh)"),
) -> None:
    """Instant recovery: the MAC or machine boots the restore point at its next PXE boot.

    Example: diskvault backup boot 3f2a9c --mac 52:54:00:12:34:57
    """
    client = Client()
    body = {"mac": mac, "machine": machine, "mode": mode}
    point = backups_cli._resolve(client, backup_id)
    _show(client.post(f"/api/v1/backup/{point}/boot", json=body))


def verify_boot(
    backup_id: str = typer.Argument(...),
    wait: bool = typer.Option(True, "--wait/--no-wait"),
) -> None:
    """Boot the restore point in a throw-away QEMU and record whether it boots.

    Example: diskvault backup verify-boot 3f2a9c
    """
    client = Client()
    point = backups_cli._resolve(client, backup_id)
    job = client.post(f"/api/v1/backup/{point}/verify-boot")
    if wait:
        watch(client, job["id"])
    shown = client.get(f"/api/v1/backup/{point}")
    console.print(f"{point}: boot {shown['boot_status']} ({shown['boot_detail']})")


def show(
    backup_id: str = typer.Argument(..., help="restore point id or a unique prefix (4+)"),
    as_json: bool = JSON,
    quiet: bool = QUIET,
) -> None:
    """Every field of one restore point, its boot verification included.

    Example: diskvault backup show 3f2a9c
    """
    show_object(f"/api/v1/backup/{backup_id}", "restore point", as_json=as_json, quiet=quiet)


backups_cli.app.command("boot")(boot)
backups_cli.app.command("verify-boot")(verify_boot)
backups_cli.app.command("show")(show)


@app.command("list")
def list_(as_json: bool = JSON, quiet: bool = QUIET) -> None:
    """Live instant recoveries: restore point, machine, overlay size, uptime.

    Example: diskvault recovery list
    """
    page = Client().get("/api/v1/recoveries", params={"limit": 1000})
    emit(page, as_json=as_json, quiet=quiet, human=lambda: _list(page))


@app.command("show")
def show_recovery(
    recovery: str = typer.Argument(..., help="recovery id, prefix, MAC or machine name"),
    as_json: bool = JSON,
    quiet: bool = QUIET,
) -> None:
    """Show one live recovery.

    Example: diskvault recovery show 52:54:00:12:34:57
    """
    path = f"/api/v1/recoveries/{_recovery(Client(), recovery)}"
    show_object(path, f"recovery {recovery}", as_json=as_json, quiet=quiet)


def _list(page: dict[str, Any]) -> None:
    ids, points = short_ids(page["items"]), short_ids(page["items"], "backup_id")
    rows = [
        (
            ids[r["id"]],
            points[r["backup_id"]],
            r["machine"] or "(temporary)",
            r["mac"],
            r["mode"],
            human_bytes(r["overlay_bytes"]),
            f"{r['uptime_s']:.0f} s",
            r["error"] or "",
        )
        for r in page["items"]
    ]
    cols = ["id", "point id", "machine", "mac", "mode", "overlay", "uptime", "error"]
    print_table(f"recoveries ({page['total']})", cols, rows)


@app.command()
def promote(
    recovery: str = typer.Argument(..., help="recovery id, prefix, MAC or machine name"),
    to: str = typer.Option("image", "--to", help="image | file | version (of the machine's image)"),
    name: str = typer.Option(None, "--name", help="the new image's name"),
    path: str = typer.Option(None, "--path", help="a new file inside BACKUP_RESTORE_ROOTS"),
    fmt: str = typer.Option("qcow2", "--format"),
    comment: str = typer.Option(None, "--comment", help="the new version's comment"),
    switch: bool = typer.Option(
        False, "--switch", help="the machine boots the new image once the recovery ends"
    ),
    wait: bool = typer.Option(True, "--wait/--no-wait"),
) -> None:
    """Copy restore point + the guest's writes to a new image or file; the guest keeps running.

    Example: diskvault recovery promote 52:54:00:12:34:57 --to image --name web1-recovered
    Example: diskvault recovery promote pc07 --to version --comment "restored 2026-12-03"
    """
    client = Client()
    body: dict[str, object] = {"to": to, "name": name, "path": path, "format": fmt}
    body |= {"comment": comment, "switch": switch}
    job = client.post(f"/api/v1/recoveries/{_recovery(client, recovery)}/promote", json=body)
    final = watch(client, job["id"]) if wait else job
    console.print(f"promoted: {final.get('result') or job['id']}", highlight=False)


@app.command()
def stop(
    recovery: str = typer.Argument(..., help="recovery id, prefix, MAC or machine name"),
) -> None:
    """End a recovery and throw the guest's writes away.

    Example: diskvault recovery stop 52:54:00:12:34:57
    """
    client = Client()
    rec = _recovery(client, recovery)
    client.delete(f"/api/v1/recoveries/{rec}")
    console.print(f"recovery {rec} stopped; its overlay is gone")
