"""Shared CLI pieces: the rich consoles and table rendering."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


class _LazyConsole:
    """A rich Console made on first use: importing rich costs a command that prints
    nothing through it (``diskvault version``, ``--help`` of a sub-command) real time."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None

    def made(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.made(), name)


def real(lazy: Console) -> Console:
    """The Console itself, for rich objects that use it as a context manager (Progress)."""
    return lazy.made() if isinstance(lazy, _LazyConsole) else lazy


console: Console = _LazyConsole()  # type: ignore[assignment]
err_console: Console = _LazyConsole(stderr=True)  # type: ignore[assignment]


def __getattr__(name: str) -> Any:
    """``JSON`` and ``QUIET``: the ``--json`` and ``-q`` options of every list and show
    command, made on use so that importing this module does not import typer."""
    import typer

    if name == "JSON":
        return typer.Option(False, "--json", help="print the API's JSON as it is, for scripts")
    if name == "QUIET":
        return typer.Option(False, "-q", "--quiet", help="print only ids, one a line")
    raise AttributeError(name)


# Columns whose values are copied back into commands: never cut, never wrapped.
WHOLE = frozenset({"id", "iqn", "target", "portal", "path", "mac", "initiator", "mount"})


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A table at the terminal's width. Ids, IQNs, paths, MACs and portals are printed
    whole: the other columns wrap to make room, and where even that cannot fit, each row
    is printed as ``column: value`` lines instead."""
    from rich.table import Table
    from rich.text import Text

    cells = [["" if v is None else str(v) for v in row] for row in rows]
    whole = [c.lower() in WHOLE or c.lower().endswith(" id") for c in columns]
    need = (
        sum(
            max([len(c), *(len(r[i]) for r in cells)]) if whole[i] else min(len(c), 8) + 2
            for i, c in enumerate(columns)
        )
        + 3 * len(columns)
        + 1
    )
    if cells and need > console.width:
        _print_records(title, columns, cells)
        return
    table = Table(title=title)
    for col, keep in zip(columns, whole, strict=True):
        table.add_column(col, no_wrap=keep, overflow="fold")
    for row in cells:
        # Text cells: values such as MACs ("52:54:00:ab:...") must not turn into emoji or markup.
        table.add_row(*(Text(v) for v in row))
    console.print(table)


def _print_records(title: str, columns: Sequence[str], cells: list[list[str]]) -> None:
    from rich.text import Text

    width = max(len(c) for c in columns)
    console.print(Text(title, style="italic"))
    for row in cells:
        console.print()
        for col, value in zip(columns, row, strict=True):
            # soft_wrap: a long path runs on as one line, so it is never cut or split.
            console.print(Text(f"{col:<{width}}  {value}"), soft_wrap=True)


def print_fields(title: str, row: dict[str, Any]) -> None:
    """One object as a two-column table, every field the API gave."""
    print_table(title, ["field", "value"], [(k, str(v)) for k, v in row.items()])


def show_object(path: str, title: str, *, as_json: bool, quiet: bool) -> None:
    """``show`` for kinds without a page of their own: GET ``path``, then print it."""
    from diskvault.cli.client import Client

    row = Client().get(path)
    emit(row, as_json=as_json, quiet=quiet, human=lambda: print_fields(title, row))


def short_ids(items: Sequence[dict[str, Any]], key: str = "id") -> dict[str, str]:
    """The listed ids at their shortest unique length (at least 8); each is accepted back."""
    from diskvault.ids import shortest_unique

    return shortest_unique([str(i[key]) for i in items if i.get(key)])


def emit(
    data: Any, *, as_json: bool, quiet: bool, human: Callable[[], None], key: str = "id"
) -> None:
    """``--json``: the API's JSON as it came; ``-q``: ids only, one a line; else ``human``."""
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    elif quiet:
        items = data["items"] if isinstance(data, dict) and "items" in data else [data]
        if isinstance(data, list):
            items = data
        sys.stdout.write("".join(f"{i[key]}\n" for i in items if isinstance(i, dict)))
    else:
        human()


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
