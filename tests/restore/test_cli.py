"""The restore commands attach to any typer group (the lead puts them under ``backup``)."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from diskvault.cli import restore


def test_register_adds_the_four_commands() -> None:
    group = typer.Typer()

    @group.command("list")
    def existing() -> None:
        """Already there. Example: x"""

    restore.register(group)
    runner = CliRunner()
    out = runner.invoke(group, ["--help"], terminal_width=200)
    assert out.exit_code == 0
    for name in ("list", "mount", "ls", "extract", "umount"):
        assert name in out.output
    for name in ("mount", "ls", "extract", "umount"):
        helped = runner.invoke(group, [name, "--help"], terminal_width=200)
        assert helped.exit_code == 0 and "Example: diskvault backup" in helped.output


def test_extract_needs_a_mount_or_a_point() -> None:
    out = CliRunner().invoke(
        restore.app,
        ["extract", "--file", "/etc/hosts", "--output", "x"],
        env={"DISKVAULT_TOKEN": "t"},
    )
    assert out.exit_code == 2 and "--mount MOUNT or --backup-id ID" in out.output
