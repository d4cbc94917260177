"""Entry point: the typer app, its command groups, and one-line error output."""

from __future__ import annotations

import json
import sys
import traceback

import typer

from diskvault.cli import config, serve, session, worker
from diskvault.cli.client import EXIT_CODES, ApiError
from diskvault.cli.common import err_console
from diskvault.domains import cli_modules
from diskvault.errors import DiskvaultError

app = typer.Typer(
    name="diskvault",
    help="diskvault: disk-image library, diskless iSCSI boot, QCOW2 backups, organizer.\n\n"
    "Example: diskvault serve\n\n"
    "Exit codes: " + "; ".join(f"{code} {what}" for code, what in EXIT_CODES.items()) + ".",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
_state = {"debug": False}


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="show tracebacks on errors"),
) -> None:
    """diskvault command line. Example: diskvault --debug status"""
    _state["debug"] = debug


app.command()(serve.serve)
app.command()(session.login)
app.command()(session.logout)
app.command()(session.status)
app.command()(session.version)
app.command()(worker.worker)
app.add_typer(config.app, name="config")
for _name, _module in cli_modules():
    app.add_typer(_module.app, name=getattr(_module, "NAME", _name))
    for _extra_name, _extra in getattr(_module, "EXTRA_GROUPS", {}).items():
        app.add_typer(_extra, name=_extra_name)


def main() -> None:
    debug = "--debug" in sys.argv
    try:
        app(standalone_mode=True)
    except SystemExit:
        raise
    except DiskvaultError as exc:
        if debug:
            traceback.print_exc()
        if "--json" in sys.argv:  # a script gets the problem+json body, with the same code
            print(json.dumps(exc.problem(), indent=2))
        else:
            err_console.print(f"[red]error:[/] {exc.message}", highlight=False, soft_wrap=True)
        code = exc.exit_code_value if isinstance(exc, ApiError) else exc.exit_code
        sys.exit(code)
    except KeyboardInterrupt:
        err_console.print("[red]interrupted[/]")
        sys.exit(130)
    except Exception as exc:
        if debug:
            traceback.print_exc()
        err_console.print(
            f"[red]error:[/] {type(exc).__name__}: {exc}", highlight=False, soft_wrap=True
        )
        sys.exit(1)
