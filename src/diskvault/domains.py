"""The domain packages and how the app, CLI, DB and workers find their parts.

Each domain package may have ``models`` (tables), ``endpoints`` (``router``,
optional ``ws_router``, optional ``startup(app)``/``shutdown(app)``),
``tasks`` (job kinds and periodic work) and a CLI module
``diskvault.cli.<name>`` exposing a typer ``app``. Listing a domain here is
the one place that wires it in.
"""

from __future__ import annotations

import importlib
from types import ModuleType

DOMAINS = (
    "auth",
    "jobs",
    "images",
    "organizer",
    "targets",
    "boot",
    "backups",
    "restore",
)


def optional_module(name: str) -> ModuleType | None:
    """Import ``name`` if it exists; a missing dependency inside it still raises."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            return None
        raise


def domain_modules(part: str) -> list[ModuleType]:
    found = (optional_module(f"diskvault.{d}.{part}") for d in DOMAINS)
    return [m for m in found if m is not None]


def cli_modules() -> list[tuple[str, ModuleType]]:
    found = ((d, optional_module(f"diskvault.cli.{d}")) for d in DOMAINS)
    return [(d, m) for d, m in found if m is not None]
