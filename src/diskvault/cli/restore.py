"""``diskvault restore`` (also attachable to ``diskvault backup`` with :func:`register`):
mount a restore point read-only, list its files, extract files or folders, unmount."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import typer

from diskvault.cli.client import Client, Unreachable, api_error
from diskvault.cli.common import JSON, QUIET, console, emit, human_bytes, print_table, short_ids
from diskvault.cli.sparse import SparseWriter

NAME = "restore"
app = typer.Typer(
    help="File-level restore from backups. Example: diskvault restore mount --backup-id 3f2a9c..."
)
CHUNK = 1024 * 1024
PARTITION = typer.Option(
    None, "--partition", "-p", help="partition index (default: the first one holding the path)"
)


def _print_mount(mount: dict[str, Any]) -> None:
    console.print(
        f"mount {mount['mount_id']} of restore point {mount['backup_id']} "
        f"({mount['status']}, expires {mount['expires_at']})",
        highlight=False,
    )
    rows = [
        (
            p["index"],
            p["fstype"] or "-",
            human_bytes(p["size"]),
            p["label"] or "",
            "yes" if p["mounted"] else "no",
            p.get("mount_path") or p["reason"] or "",
        )
        for p in mount["partitions"]
    ]
    cols = ["#", "fstype", "size", "label", "mounted", "server path / reason"]
    print_table("partitions", cols, rows)


def mount(
    backup_id: str = typer.Option(
        ..., "--backup-id", help="restore point id or a unique prefix (4+)"
    ),
) -> None:
    """Mount a restore point read-only; prints the mount id and its partitions.

    Example: diskvault backup mount --backup-id 3f2a9c1e
    """
    client = Client()
    body = {"backup_id": client.full_id("/api/v1/backup", backup_id)}
    _print_mount(client.post("/api/v1/restore/mount", json=body))


def ls(
    mount_id: str = typer.Argument(..., help="mount id"),
    path: str = typer.Argument("/", help="directory inside the partition"),
    partition: int | None = PARTITION,
    limit: int = typer.Option(1000, "--limit", help="entries per page"),
    offset: int = typer.Option(0, "--offset"),
    as_json: bool = JSON,
    quiet: bool = QUIET,
) -> None:
    """List a directory of a mounted restore point (``-q``: names only).

    Example: diskvault backup ls 9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a /var/www
    """
    params = {"path": path, "limit": limit, "offset": offset, "partition": partition}
    page = Client().get(
        f"/api/v1/restore/{mount_id}/files",
        params={k: v for k, v in params.items() if v is not None},
    )
    emit(page, as_json=as_json, quiet=quiet, human=lambda: _ls(page), key="name")


def _ls(page: dict[str, Any]) -> None:
    rows = [
        (
            e["type"],
            e["mode"],
            human_bytes(e["size"]) if e["type"] == "file" else "",
            e["mtime"][:19].replace("T", " "),
            e["name"] + (f" -> {e['target']}" if e["target"] is not None else ""),
        )
        for e in page["items"]
    ]
    title = f"partition {page['partition']}: {page['path']} ({page['total']} entries)"
    print_table(title, ["type", "mode", "size", "modified", "name"], rows)
    shown = page["offset"] + len(page["items"])
    if shown < page["total"]:
        console.print(f"... {page['total'] - shown} more; use --offset {shown}")


@contextlib.contextmanager
def _mounted(client: Client, mount_id: str | None, backup_id: str | None) -> Iterator[str]:
    """The mount to use: the one given, or a fresh one unmounted afterwards."""
    if mount_id:
        yield mount_id
        return
    if not backup_id:
        raise typer.BadParameter("give --mount MOUNT or --backup-id ID")
    body = {"backup_id": client.full_id("/api/v1/backup", backup_id)}
    made = client.post("/api/v1/restore/mount", json=body)["mount_id"]
    try:
        yield made
    finally:
        client.delete(f"/api/v1/restore/{made}")


def _save(client: Client, url: str, params: dict[str, Any], output: Path, name: str) -> Path:
    """Stream a download to ``output`` (a directory gets the server's name in it)."""
    import httpx

    headers = client._headers(True)
    try:
        with client.http.stream("GET", url, params=params, headers=headers) as resp:
            if resp.status_code >= 400:
                resp.read()
                raise api_error(resp)
            kind = resp.headers.get("content-type", "")
            if output.is_dir():
                suffix = {"application/x-tar": ".tar", "application/zip": ".zip"}.get(kind, "")
                output = output / (name + suffix)
            partial = output.with_name(output.name + ".partial")
            with open(partial, "wb") as fh:
                sparse = SparseWriter(fh)
                for chunk in resp.iter_raw(CHUNK):
                    sparse.write(chunk)
                sparse.close()
                fh.flush()
                os.fsync(fh.fileno())
    except httpx.TransportError as exc:
        raise Unreachable(url=client.url, reason=str(exc) or type(exc).__name__) from None
    os.replace(partial, output)
    return output


def extract(
    file: str = typer.Option(..., "--file", help="file or directory inside the guest"),
    output: Path = typer.Option(..., "--output", "-o", help="file (or directory) to write"),
    backup_id: str | None = typer.Option(
        None, "--backup-id", help="mount this point, then unmount"
    ),
    mount_id: str | None = typer.Option(None, "--mount", help="reuse a mount"),
    partition: int | None = PARTITION,
    format_: str = typer.Option("tar", "--format", help="directories: tar or zip"),
) -> None:
    """Extract a file (or a directory as tar/zip) from a restore point.

    Without --mount it mounts the restore point, extracts, and unmounts.

    Example: diskvault backup extract --backup-id 3f2a9c... --file /etc/hosts --output ./hosts
    """
    client = Client(timeout=300)
    params = {"path": file, "format": format_, "partition": partition}
    params = {k: v for k, v in params.items() if v is not None}
    name = PurePosixPath(file).name or "root"
    with _mounted(client, mount_id, backup_id) as mounted:
        saved = _save(client, f"/api/v1/restore/{mounted}/download", params, output, name)
    console.print(f"{saved}: {human_bytes(saved.stat().st_size)}", highlight=False)


def umount(mount_id: str = typer.Argument(..., help="mount id")) -> None:
    """Unmount a restore point and free its loop devices and QSD.

    Example: diskvault backup umount 9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a
    """
    gone = Client().delete(f"/api/v1/restore/{mount_id}")
    console.print(f"mount {gone['mount_id']} {gone['status']}", highlight=False)


@app.command("list")
def list_(
    all_: bool = typer.Option(False, "--all", help="include ended mounts"),
    as_json: bool = JSON,
    quiet: bool = QUIET,
) -> None:
    """List restore mounts (active ones unless --all).

    Example: diskvault restore list --all
    """
    page = Client().get("/api/v1/restore", params={"all": all_, "limit": 1000})
    human = lambda: _mounts(page)  # noqa: E731
    emit(page, as_json=as_json, quiet=quiet, human=human, key="mount_id")


@app.command("show")
def show(
    mount_id: str = typer.Argument(..., help="mount id or a unique prefix (4+)"),
    as_json: bool = JSON,
    quiet: bool = QUIET,
) -> None:
    """Show one restore mount and its filesystems.

    Example: diskvault restore show 9d8c7b6a
    """
    mount = Client().get(f"/api/v1/restore/{mount_id}")
    emit(mount, as_json=as_json, quiet=quiet, human=lambda: _print_mount(mount), key="mount_id")


def _mounts(page: dict[str, Any]) -> None:
    ids = short_ids(page["items"], "mount_id")
    points = short_ids(page["items"], "backup_id")
    rows = [
        (
            ids[m["mount_id"]],
            points[m["backup_id"]],
            m["vm_name"] or "",
            m["status"],
            sum(1 for p in m["partitions"] if p["mounted"]),
            m["expires_at"][:19].replace("T", " "),
        )
        for m in page["items"]
    ]
    cols = ["mount", "point id", "vm", "status", "mounted fs", "expires"]
    print_table("restore mounts", cols, rows)


COMMANDS: dict[str, Callable[..., None]] = {
    "mount": mount,
    "ls": ls,
    "extract": extract,
    "umount": umount,
}


def register(target: typer.Typer) -> None:
    """Add mount, ls, extract and umount to ``target`` (the ``backup`` group)."""
    for name, fn in COMMANDS.items():
        target.command(name)(fn)


register(app)
