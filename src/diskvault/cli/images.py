"""``diskvault image``: upload, import, list, convert, resize, download and delete images.

``info`` and ``convert --local`` work on local files with no server, with the
same header inspection the server runs.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import typer

from diskvault.cli import image_versions
from diskvault.cli.client import Client, Unreachable, api_error, server_path
from diskvault.cli.common import (
    JSON,
    QUIET,
    console,
    emit,
    human_bytes,
    print_table,
    short_ids,
)
from diskvault.cli.progress import make_progress, watch
from diskvault.cli.sparse import SparseWriter
from diskvault.errors import BadRequest

if TYPE_CHECKING:  # rich and httpx load when a command needs them: a faster start
    from rich.progress import Progress

NAME = "image"
app = typer.Typer(help="Disk images. Example: diskvault image upload win11.vhdx --wait")

CHUNK = 1024 * 1024
_SIZE = re.compile(r"^(\d+)\s*([KMGT]i?B?|B)?$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def _bar() -> Progress:
    return make_progress()


def parse_size(text: str) -> int:
    """``20G``, ``512M``, ``1TiB`` or plain bytes (binary units)."""
    match = _SIZE.match(text.strip())
    if not match:
        raise BadRequest(f"cannot read size {text!r}; use bytes or a unit like 20G or 512MiB")
    unit = (match[2] or "").upper()[:1]
    return int(match[1]) * _UNITS[unit]


def _resolve(client: Client, image_id: str) -> str:
    return client.full_id("/api/v1/images", image_id)


def _show(image: dict[str, Any]) -> None:
    rows = [
        ("id", image["id"]),
        ("name", image["name"]),
        ("type", image["image_type"]),
        ("status", image["status"]),
        ("format", image["format"]),
        ("target format", image["target_format"] or "(the server's default)"),
        ("virtual size", human_bytes(image["virtual_size"])),
        ("actual size", human_bytes(image["actual_size"])),
        ("sha256", image["sha256"]),
        ("digest (sha256-extents-v1)", image.get("digest")),
        ("source", image["source"]),
        ("owner", image["owner"]),
        ("job", image["job_id"]),
        ("error", image["error"]),
        ("updated", image["updated_at"]),
    ]
    print_table(f"image {image['id'][:12]}", ["field", "value"], rows)


def _finish(client: Client, image: dict[str, Any], wait: bool) -> None:
    if wait and image.get("job_id") and image["status"] not in ("READY", "ERROR"):
        try:
            watch(client, image["job_id"])
        finally:
            image = client.get(f"/api/v1/images/{image['id']}")
    _show(image)


@app.command()
def upload(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="the image file"),
    name: str = typer.Option(None, "--name", help="display name (default: the file name)"),
    image_type: str = typer.Option("system", "--type", help="system|game|data"),
    fmt: str = typer.Option(None, "--format", help="declared format; the server checks it"),
    target: str = typer.Option(None, "--target-format", help="raw|qcow2 (default: server's)"),
    wait: bool = typer.Option(False, "--wait", help="follow processing until READY or ERROR"),
) -> None:
    """Upload an image with a progress bar; it is inspected, verified and converted.

    Only the file's data is sent: holes and all-zero MiB blocks are skipped. Its
    sha256-extents-v1 digest (reading the data only) goes along, and the server
    refuses the upload if what it received differs.

    Example: diskvault image upload win11.vhdx --name "Windows 11" --type system --wait
    """
    from diskvault.images import admission, sparse
    from diskvault.images.digest import file_digest

    client = Client()
    with console.status(f"checksumming {file.name} (its data only)"):
        digest, _ = file_digest(file)
    params = {"name": name or file.name, "image_type": image_type}
    if fmt:
        params["format"] = fmt
    if target:
        params["target_format"] = target

    def tracked() -> Iterator[bytes]:
        # Only data travels (holes and zero blocks are skipped); the bar shows the file offset.
        with _bar() as bar:
            task = bar.add_task(f"upload {file.name}", total=file.stat().st_size)
            yield from sparse.encode(file, lambda pos: bar.update(task, completed=pos))

    image = client.post(
        "/api/v1/images/upload",
        params=params,
        content=tracked(),
        headers={"Content-Type": sparse.CONTENT_TYPE, admission.EXTENTS_HEADER: digest},
        timeout=300.0,
    )
    console.print(f"uploaded {file.name}: image {image['id']} ({image['status']})")
    _finish(client, image, wait)


@app.command("import")
def import_(
    source: str = typer.Argument(..., help="a path on the server (inside its import roots) or URL"),
    name: str = typer.Option(None, "--name", help="display name"),
    image_type: str = typer.Option("system", "--type", help="system|game|data"),
    fmt: str = typer.Option(None, "--format", help="declared format; the server checks it"),
    wait: bool = typer.Option(False, "--wait", help="follow the import until READY or ERROR"),
) -> None:
    """Import an image from a server-side path or an http(s) URL.

    Example: diskvault image import https://images.example.com/debian.qcow2 --wait
    """
    client = Client()
    body: dict[str, Any] = {"image_type": image_type, "name": name, "format": fmt}
    if source.startswith(("http://", "https://")):
        body["url"] = source
    else:
        body["path"] = server_path(client.url, source, "SOURCE")
    image = client.post("/api/v1/images/import", json=body)
    console.print(f"importing {source}: image {image['id']} ({image['status']})")
    _finish(client, image, wait)


@app.command("list")
def list_(
    status: str = typer.Option(
        None, "--status", help="UPLOADING|PROCESSING|CONVERTING|READY|ERROR"
    ),
    fmt: str = typer.Option(None, "--format", help="raw, qcow2, vhdx, ..."),
    image_type: str = typer.Option(None, "--type", help="system|game|data"),
    limit: int = typer.Option(50, "--limit"),
    as_json: bool = JSON,
    quiet: bool = QUIET,
) -> None:
    """List images, newest first.

    Example: diskvault image list --status READY --type game
    """
    params: dict[str, Any] = {"limit": limit}
    for key, value in (("status", status), ("format", fmt), ("image_type", image_type)):
        if value:
            params[key] = value
    page = Client().get("/api/v1/images", params=params)
    emit(page, as_json=as_json, quiet=quiet, human=lambda: _list(page))


def _list(page: dict[str, Any]) -> None:
    ids = short_ids(page["items"])
    rows = [
        (
            ids[i["id"]],
            i["name"],
            i["image_type"],
            i["status"],
            i["format"] or "",
            human_bytes(i["virtual_size"]),
            i["error"] or "",  # the inspector's reason for a refused image, in full
        )
        for i in page["items"]
    ]
    print_table(
        f"images ({page['total']} total)",
        ["id", "name", "type", "status", "format", "size", "error"],
        rows,
    )


@app.command()
def show(
    image_id: str = typer.Argument(..., help="image id, a unique prefix (4+) or the name"),
    as_json: bool = JSON,
    quiet: bool = QUIET,
) -> None:
    """Show one image.

    Example: diskvault image show 3f2a9c
    """
    image = Client().get(f"/api/v1/images/{quote(image_id, safe='')}")
    emit(image, as_json=as_json, quiet=quiet, human=lambda: _show(image))


def _local_settings() -> Any:
    from diskvault.config import Settings  # only local commands read the settings

    return Settings()


def _inspect_local(file: Path) -> tuple[Any, dict[str, Any]]:
    from diskvault.images.inspect import inspect_file, verify_with_qemu_img

    settings = _local_settings()
    inspection = inspect_file(file, max_virtual_size=settings.MAX_VIRTUAL_SIZE)
    info = verify_with_qemu_img(file, inspection, binary=settings.QEMU_IMG_PATH)
    return inspection, info


@app.command()
def info(
    target: str = typer.Argument(..., help="a local image file (or, without --local, an id)"),
    local: bool = typer.Option(False, "--local", help="inspect a local file; no server needed"),
) -> None:
    """Inspect an image file safely (headers first, then qemu-img info under limits).

    Example: diskvault image info disk.vhdx --local
    """
    path = Path(target)
    if not local and not path.is_file():
        show(target)
        return
    inspection, info = _inspect_local(path)
    rows = [
        ("file", str(path)),
        ("format", inspection.format),
        ("virtual size", f"{inspection.virtual_size} ({human_bytes(inspection.virtual_size)})"),
        ("file size", human_bytes(inspection.file_size)),
        ("actual size", human_bytes(info.get("actual-size"))),
        *((k, str(v)) for k, v in inspection.details.items()),
        ("qemu-img", "agrees: same format, no backing or data file"),
    ]
    print_table(f"{path.name}: safe to import", ["field", "value"], rows)


@app.command()
def convert(
    source: str = typer.Argument(..., help="image id, or with --local a source file"),
    dest: Path = typer.Argument(None, help="a local output file (implies --local)"),
    to: str = typer.Option(..., "--to", help="raw|qcow2|vmdk|vhdx"),
    local: bool = typer.Option(False, "--local", help="convert local files; no server needed"),
    compress: bool = typer.Option(False, "--compress", help="qcow2: compressed clusters"),
    wait: bool = typer.Option(False, "--wait", help="follow the server's conversion job"),
    sync: bool = typer.Option(
        True, "--sync/--no-sync", help="with --local: flush DST to disk before naming it"
    ),
) -> None:
    """Convert an image, on the server (by id) or locally (SRC DST) with a progress bar.

    Giving DST means a local conversion (--local is implied). --no-sync skips the
    final flush, as qemu-img and cp do: faster, but after a power cut DST may lack data.

    Example: diskvault image convert disk.vhdx disk.raw --to raw
    """
    if not local and dest is None:
        client = Client()
        body = {"target_format": to, "compress": compress}
        image = client.post(f"/api/v1/images/{_resolve(client, source)}/convert", json=body)
        _finish(client, image, wait)
        return
    from diskvault.images.files import TARGET_FORMATS, convert_file

    if dest is None or to not in TARGET_FORMATS:
        raise BadRequest(f"give SRC DST and --to one of {', '.join(TARGET_FORMATS)}")
    inspection, _ = _inspect_local(Path(source))
    started = time.perf_counter()
    with _bar() as bar:
        task = bar.add_task(f"{inspection.format} -> {to}", total=inspection.virtual_size)
        convert_file(
            Path(source),
            inspection.qemu_format,
            dest,
            to,
            binary=_local_settings().QEMU_IMG_PATH,
            progress=lambda pct: bar.update(task, completed=inspection.virtual_size * pct / 100),
            compress=compress,
            sync=sync,
        )
    elapsed = time.perf_counter() - started
    console.print(f"{dest}: {to}, {human_bytes(dest.stat().st_size)} in {elapsed:.2f}s")


@app.command()
def resize(
    image_id: str = typer.Argument(..., help="image id (a unique prefix works)"),
    size: str = typer.Argument(..., help="new virtual size: bytes or 20G, 512M, ..."),
    force: bool = typer.Option(False, "--force", help="allow shrinking when the data fits"),
    wait: bool = typer.Option(False, "--wait", help="follow the resize job"),
) -> None:
    """Grow an image (shrinking needs --force and is refused if data would be lost).

    Example: diskvault image resize 3f2a9c 40G --wait
    """
    client = Client()
    body = {"size": parse_size(size), "force": force}
    image = client.post(f"/api/v1/images/{_resolve(client, image_id)}/resize", json=body)
    _finish(client, image, wait)


@app.command()
def download(
    image_id: str = typer.Argument(..., help="image id (a unique prefix works)"),
    output: Path = typer.Option(..., "-o", "--output", help="file to write"),
) -> None:
    """Download an image; an interrupted download resumes from OUTPUT.partial.

    Example: diskvault image download 3f2a9c -o win11.raw
    """
    import httpx

    client = Client(timeout=300)
    path = f"/api/v1/images/{_resolve(client, image_id)}/download"
    partial = output.with_name(output.name + ".partial")
    have = partial.stat().st_size if partial.exists() else 0
    headers = {**client._headers(True), **({"Range": f"bytes={have}-"} if have else {})}
    try:
        with client.http.stream("GET", path, headers=headers) as resp:
            if resp.status_code >= 400:
                resp.read()
                raise api_error(resp)
            if resp.status_code != 206:
                have = 0
            total = have + int(resp.headers.get("content-length", 0))
            with open(partial, "r+b" if have else "wb") as fh, _bar() as bar:
                fh.seek(have)
                sparse = SparseWriter(fh)
                task = bar.add_task(f"download {output.name}", total=total, completed=have)
                for chunk in resp.iter_raw(CHUNK):
                    sparse.write(chunk)
                    bar.advance(task, len(chunk))
                sparse.close()
                fh.flush()
                os.fsync(fh.fileno())
    except httpx.TransportError as exc:
        raise Unreachable(url=client.url, reason=str(exc) or type(exc).__name__) from None
    os.replace(partial, output)
    console.print(f"{output}: {human_bytes(output.stat().st_size)}")


@app.command("rm")
def remove(
    image_id: str = typer.Argument(None, help="image id (a unique prefix works)"),
    status: str = typer.Option(
        None, "--status", help="instead: delete every image in this status (e.g. error)"
    ),
) -> None:
    """Delete an image, or every image in one status (refused while a target, machine or
    backup uses it).

    Example: diskvault image rm --status error
    """
    client = Client()
    if (image_id is None) == (status is None):
        raise typer.BadParameter("give an IMAGE_ID or --status, not both")
    if image_id is not None:
        resolved = _resolve(client, image_id)
        client.delete(f"/api/v1/images/{resolved}")
        console.print(f"image {resolved} deleted")
        return
    deleted = 0
    while items := client.get("/api/v1/images", params={"status": status.upper()})["items"]:
        for image in items:
            client.delete(f"/api/v1/images/{image['id']}")
            deleted += 1
            reason = f": {image['error']}" if image["error"] else ""
            console.print(f"image {image['id']} ({image['name']}) deleted{reason}", highlight=False)
    console.print(f"{deleted} {status.upper()} image(s) deleted")


image_versions.register(app)  # versions and rollback (diskless boot)
