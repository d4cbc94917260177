"""``diskvault target``: serve images over iSCSI."""

from __future__ import annotations

from typing import Any

import typer

from diskvault.cli.client import Client
from diskvault.cli.common import JSON, QUIET, console, emit, print_table, short_ids

NAME = "target"
_REF = "target id, a unique prefix (4+) or its IQN"
app = typer.Typer(
    help="iSCSI targets. Example: diskvault target create --image 3f2a9c --initiator "
    "iqn.2024-01.com.example:pc1"
)


def _credentials(value: str | None, option: str) -> dict[str, str] | None:
    if value is None:
        return None
    user, sep, secret = value.partition(":")
    if not sep or not user or not secret:
        raise typer.BadParameter("expected USER:SECRET", param_hint=option)
    return {"user": user, "secret": secret}


def _show(target: dict[str, Any]) -> None:
    print_table(
        f"target {target['id']}",
        ["field", "value"],
        [
            ("iqn", target["iqn"]),
            ("status", target["status"]),
            ("portal", target["portal"]),
            ("lun", target["lun"]),
            ("image", target["image_id"] or "-"),
            ("path", target["path"]),
            ("initiators", ", ".join(target["initiators"]) or "any"),
            ("chap user", target["chap_user"] or "-"),
            ("machine", target["machine_id"] or "-"),
            ("error", target["error"] or ""),
        ],
    )


@app.command()
def create(
    image: str = typer.Option(
        None, "--image", help="a READY raw image: id, unique prefix (4+) or name"
    ),
    path: str = typer.Option(
        None, "--path", help="instead of --image: a writeback layer under DISKVAULT_WRITEBACK_PATH"
    ),
    initiator: list[str] = typer.Option(
        [], "--initiator", help="allowed initiator IQN (repeat for more; none: any)"
    ),
    chap: str = typer.Option(None, "--chap", help="USER:SECRET the initiator must log in with"),
    mutual_chap: str = typer.Option(
        None, "--mutual-chap", help="USER:SECRET the target answers with (mutual CHAP)"
    ),
    name: str = typer.Option(None, "--name", help="IQN suffix (default: the image id)"),
    portal: str = typer.Option(None, "--portal", help="ip:port (default: the server's portal)"),
    lun: int = typer.Option(1, "--lun", help="LUN number, 1-255"),
) -> None:
    """Serve an image over iSCSI.

    Example: diskvault target create --image 3f2a9c --initiator iqn.2024-01.com.example:pc1
    """
    if (image is None) == (path is None):
        raise typer.BadParameter("give exactly one of --image and --path", param_hint="--image")
    client = Client()
    body = {
        "image_id": client.full_id("/api/v1/images", image) if image else None,
        "path": path,
        "initiators": initiator,
        "chap": _credentials(chap, "--chap"),
        "mutual_chap": _credentials(mutual_chap, "--mutual-chap"),
        "name": name,
        "portal": portal,
        "lun": lun,
    }
    _show(client.post("/api/v1/targets", json=body))


@app.command("list")
def list_(
    status: str = typer.Option(None, "--status", help="PENDING|ACTIVE|INACTIVE|ERROR"),
    limit: int = typer.Option(50, "--limit"),
    as_json: bool = JSON,
    quiet: bool = QUIET,
) -> None:
    """List targets.

    Example: diskvault target list --status ERROR
    """
    params: dict[str, Any] = {"limit": limit, **({"status": status} if status else {})}
    page = Client().get("/api/v1/targets", params=params)
    emit(page, as_json=as_json, quiet=quiet, human=lambda: _list(page))


def _list(page: dict[str, Any]) -> None:
    ids = short_ids(page["items"])
    rows = [
        (ids[t["id"]], t["iqn"], t["status"], t["portal"], t["image_id"] or t["path"])
        for t in page["items"]
    ]
    print_table(f"targets ({page['total']} total)", ["id", "iqn", "status", "portal", "path"], rows)


@app.command()
def show(
    target: str = typer.Argument(..., help=_REF),
    as_json: bool = JSON,
    quiet: bool = QUIET,
) -> None:
    """Show one target.

    Example: diskvault target show iqn.2024-01.io.diskvault:win11
    """
    row = Client().get(f"/api/v1/targets/{target}")
    emit(row, as_json=as_json, quiet=quiet, human=lambda: _show(row))


@app.command()
def status(
    target_id: str = typer.Argument(..., help=_REF),
    as_json: bool = JSON,
    quiet: bool = QUIET,
) -> None:
    """Show live status: present in the backend, connected initiators.

    Example: diskvault target status 3f2a9c0d
    """
    live = Client().get(f"/api/v1/targets/{target_id}/status")
    emit(live, as_json=as_json, quiet=quiet, human=lambda: _status(live))


def _status(live: dict[str, Any]) -> None:
    console.print(
        f"{live['iqn']}: {live['status']}, "
        f"{'present' if live['present'] else 'MISSING'} in the backend"
    )
    print_table(
        "sessions",
        ["initiator", "addresses", "session"],
        [(s["initiator"], ", ".join(s["addresses"]), s["session_id"]) for s in live["sessions"]],
    )


@app.command()
def rm(
    target_id: str = typer.Argument(..., help=_REF),
    force: bool = typer.Option(False, "--force", help="delete even while initiators are connected"),
) -> None:
    """Delete a target (refused while an initiator is connected, unless --force).

    Example: diskvault target rm 3f2a9c0d --force
    """
    Client().delete(f"/api/v1/targets/{target_id}", params={"force": force})
    console.print(f"target {target_id} deleted")


@app.command()
def restart(
    target_id: str = typer.Argument(..., help=_REF),
    force: bool = typer.Option(
        False, "--force", help="restart even while initiators are connected"
    ),
) -> None:
    """Delete and re-create the target in the backend.

    Example: diskvault target restart 3f2a9c0d
    """
    _show(Client().post(f"/api/v1/targets/{target_id}/restart", params={"force": force}))
