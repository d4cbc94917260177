"""CLI surface: every command's --help has an example; errors are one red line."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.main import get_command

from diskvault.cli.main import app

BIN = str(Path(sys.executable).parent / "diskvault")


def _command_paths() -> list[list[str]]:
    root = get_command(app)
    paths: list[list[str]] = []

    def walk(cmd: object, prefix: list[str]) -> None:
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk(sub, [*prefix, name])
        else:
            paths.append(prefix)

    walk(root, [])
    return paths


@pytest.mark.parametrize("path", _command_paths(), ids=lambda p: " ".join(p))
def test_every_command_help_shows_an_example(path: list[str]) -> None:
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, [*path, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "Example:" in result.output


def test_version() -> None:
    out = subprocess.run([BIN, "version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.startswith("diskvault ")


def test_unreachable_server_is_one_red_line(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "XDG_CONFIG_HOME": str(tmp_path),
        "DISKVAULT_URL": "http://127.0.0.1:9",
        "DISKVAULT_TOKEN": "dvt_x",
    }
    out = subprocess.run([BIN, "status"], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 6
    lines = [x for x in out.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "cannot reach diskvault" in lines[0]
    assert "Traceback" not in out.stderr
    debug = subprocess.run(
        [BIN, "--debug", "status"], env=env, capture_output=True, text=True, timeout=30
    )
    assert "Traceback" in debug.stderr
