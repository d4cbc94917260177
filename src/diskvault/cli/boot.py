"""``diskvault machine``: diskless machines and their writeback layers."""

from __future__ import annotations

from typing import Any

import typer

from diskvault.cli import recovery as recovery_cli
from diskvault.cli.client import Client
from diskvault.cli.common import JSON, QUIET, console, emit, print_table, short_ids
from diskvault.cli.progress import watch

NAME = "machine"
app = typer.Typer(
    help="Diskless machines. Example: diskvault machine add pc-01 --mac 52:54:00:12:34:56 "
    "--image win11"
)
writeback_app = typer.Typer(
    help="A machine's writeback layer. Example: diskvault machine writeback apply pc-01 --wait"
)
app.add_typer(writeback_app, name="writeback")


def resolve_image(client: Client, ref: str) -> str:
    """An image id from an id, a unique id prefix or an image name."""
    return client.full_id("/api/v1/images", ref)


def resolve_machine(client: Client, ref: str) -> str:
    """A machine id from an id, a unique id prefix, its name or its MAC."""
    return client.full_id("/api/v1/machines", ref.lower() if ":" in ref else ref)


def _show(m: dict[str, Any]) -> None:
    rows = [
        ("id", m["id"]),
        ("name", m["name"]),
        ("mac", m["mac"]),
        ("image", m["image_id"]),
        ("mode", m["mode"]),
        ("status", m["status"]),
        ("image version", m["layer_version"] or "-"),
        ("initiator", m["initiator_iqn"]),
        ("target", m.get("target_iqn") or m["target_id"] or "-"),
        ("booted", "yes" if m.get("connected") else "no"),
        ("error", m["error"] or ""),
    ]
    print_table(f"machine {m['name']}", ["field", "value"], rows)


@app.command()
def add(
    name: str = typer.Argument(..., help="machine name (letters, digits, . _ -)"),
    mac: str = typer.Option(..., "--mac", help="MAC address of its network card"),
    image: str = typer.Option(..., "--image", help="golden image: id, id prefix or name"),
    mode: str = typer.Option(
        "discard", "--mode", help="discard: fresh writeback at each boot; keep: it persists"
    ),
    initiator: str = typer.Option(None, "--initiator", help="its iSCSI initiator IQN"),
) -> None:
    """Register a diskless machine; its writeback layer and iSCSI target are made now.

    Example: diskvault machine add pc-01 --mac 52:54:00:12:34:56 --image win11 --mode discard
    """
    client = Client()
    body = {
        "name": name,
        "mac": mac,
        "image_id": resolve_image(client, image),
        "mode": mode,
        "initiator_iqn": initiator,
    }
    _show(client.post("/api/v1/machines", json=body))


@app.command("list")
def list_(
    limit: int = typer.Option(200, "--limit"), as_json: bool = JSON, quiet: bool = QUIET
) -> None:
    """List machines.

    Example: diskvault machine list
    """
    page = Client().get("/api/v1/machines", params={"limit": limit})
    emit(page, as_json=as_json, quiet=quiet, human=lambda: _list(page))


def _list(page: dict[str, Any]) -> None:
    ids = short_ids(page["items"])
    images = short_ids(page["items"], "image_id")
    rows = [
        (
            ids[m["id"]],
            m["name"],
            m["mac"],
            images[m["image_id"]],
            m["mode"],
            m["status"],
            m["layer_version"],
        )
        for m in page["items"]
    ]
    print_table(
        f"machines ({page['total']} total)",
        ["id", "name", "mac", "image id", "mode", "status", "version"],
        rows,
    )


@app.command()
def show(
    machine: str = typer.Argument(..., help="name, MAC or id"),
    as_json: bool = JSON,
    quiet: bool = QUIET,
) -> None:
    """Show a machine, including whether it is booted right now.

    Example: diskvault machine show pc-01
    """
    client = Client()
    row = client.get(f"/api/v1/machines/{resolve_machine(client, machine)}")
    emit(row, as_json=as_json, quiet=quiet, human=lambda: _show(row))


@app.command("rm")
def remove(
    machine: str = typer.Argument(..., help="name, MAC or id"),
    force: bool = typer.Option(False, "--force", help="even while it is booted"),
) -> None:
    """Delete a machine with its target and writeback layer.

    Example: diskvault machine rm pc-01
    """
    client = Client()
    machine_id = resolve_machine(client, machine)
    client.delete(f"/api/v1/machines/{machine_id}", params={"force": force})
    console.print(f"machine {machine} deleted")


@writeback_app.command()
def apply(
    machine: str = typer.Argument(..., help="name, MAC or id"),
    comment: str = typer.Option(None, "--comment", help="what changed, kept with the version"),
    wait: bool = typer.Option(False, "--wait", help="show progress until the version is made"),
) -> None:
    """Merge the machine's writes into a new version of its image (it must be shut down).

    Example: diskvault machine writeback apply pc-01 --comment "GPU driver 551.23" --wait
    """
    client = Client()
    machine_id = resolve_machine(client, machine)
    accepted = client.post(
        f"/api/v1/machines/{machine_id}/writeback/apply", json={"comment": comment}
    )
    console.print(f"apply job {accepted['job_id']} queued")
    if wait:
        watch(client, accepted["job_id"])
        result = client.get(f"/api/v1/jobs/{accepted['job_id']}")["result"] or {}
        console.print(f"image {result.get('image_id')} is now at version {result.get('version')}")


@writeback_app.command()
def discard(machine: str = typer.Argument(..., help="name, MAC or id")) -> None:
    """Throw the machine's writes away (it must be shut down).

    Example: diskvault machine writeback discard pc-01
    """
    client = Client()
    machine_id = resolve_machine(client, machine)
    m = client.post(f"/api/v1/machines/{machine_id}/writeback/discard")
    console.print(f"writeback of {m['name']} discarded; it boots version {m['layer_version']}")


EXTRA_GROUPS = {"recovery": recovery_cli.app}
