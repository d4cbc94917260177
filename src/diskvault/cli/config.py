"""``diskvault config show``: the effective settings of this host, secrets masked."""

from __future__ import annotations

import json

import typer

app = typer.Typer(help="Settings. Example: diskvault config show")


@app.command("show")
def show(as_json: bool = typer.Option(False, "--json", help="one JSON object")) -> None:
    """Print the effective settings (environment, .env, defaults), secrets masked.

    Every setting is described in docs/settings.md.

    Example: diskvault config show --json
    """
    from diskvault.settings_doc import current, effective

    values = effective(current())
    if as_json:
        typer.echo(json.dumps(values, indent=2))
        return
    from diskvault.cli.common import print_table

    print_table(
        "settings", ["setting", "value"], ((f"DISKVAULT_{k}", v) for k, v in values.items())
    )
