"""The ``diskvault`` command. ``diskvault version`` answers before typer, rich, httpx
or the settings load; everything else goes to the typer app (:mod:`diskvault.cli.main`)."""

from __future__ import annotations

import os
import sys


def main() -> None:
    if sys.argv[1:] in (["version"], ["--version"]):
        from diskvault import __version__

        sys.stdout.write(f"diskvault {__version__}\n")
        return
    # typer's rich help and error panels import rich and markdown-it (most of --help's
    # time); click's plain help says the same. TYPER_USE_RICH=1 brings the panels back.
    os.environ.setdefault("TYPER_USE_RICH", "0")
    # httpx imports its own command line client (httpx._main) as it loads, and that pulls
    # in click, rich.syntax and pygments: about a third of an API command's start-up.
    # diskvault never runs it, and httpx puts a stub in its place when the import fails.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    from diskvault.cli.main import main as run

    run()
