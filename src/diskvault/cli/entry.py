"""The ``diskvault`` command. ``diskvault version`` answers before typer, rich, httpx
or the settings load; everything else goes to the typer app (:mod:`diskvault.cli.main`)."""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:] in (["version"], ["--version"]):
        from diskvault import __version__

        sys.stdout.write(f"diskvault {__version__}\n")
        return
    from diskvault.cli.main import main as run

    run()
