"""``diskvault image versions`` and ``image rollback``: the versions of a golden image
that diskless machines boot. Split from images.py; the commands join its ``image`` app."""

from __future__ import annotations

from typing import Any

import typer

from diskvault.cli.client import Client
from diskvault.cli.common import JSON, QUIET, console, emit, print_table


def versions(
    image: str = typer.Argument(..., help="image id, id prefix or name"),
    as_json: bool = JSON,
    quiet: bool = QUIET,
) -> None:
    """List the versions of a golden image that diskless machines boot.

    Example: diskvault image versions win11
    """
    from diskvault.cli.boot import resolve_image

    client = Client()
    image_id = resolve_image(client, image)
    page = client.get(f"/api/v1/images/{image_id}/versions", params={"limit": 1000})
    human = lambda: _versions(image_id, page)  # noqa: E731
    emit(page, as_json=as_json, quiet=quiet, human=human, key="version")


def _versions(image_id: str, page: dict[str, Any]) -> None:
    rows = [
        (
            v["version"],
            "*" if v["is_current"] else "",
            v["created_at"][:19],
            v["parent_version"] or "",
            ", ".join(v["used_by"]),
            v["comment"] or "",
        )
        for v in page["items"]
    ]
    print_table(
        f"versions of image {image_id[:12]} (* current)",
        ["version", "current", "created", "parent", "used by", "comment"],
        rows,
    )


def rollback(
    image: str = typer.Argument(..., help="image id, id prefix or name"),
    version: int = typer.Argument(..., help="the version to make current"),
) -> None:
    """Make an earlier version current; machines boot it from their next boot on.

    Example: diskvault image rollback win11 3
    """
    from diskvault.cli.boot import resolve_image

    client = Client()
    image_id = resolve_image(client, image)
    client.post(f"/api/v1/images/{image_id}/versions/{version}/rollback")
    console.print(f"image {image_id[:12]}: version {version} is current")


def register(app: typer.Typer) -> None:
    """Add ``versions`` and ``rollback`` to the ``image`` command group."""
    app.command()(versions)
    app.command()(rollback)
