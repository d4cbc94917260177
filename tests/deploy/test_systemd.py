"""The systemd units are well-formed and carry the hardening we promise."""

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

UNITS = sorted((Path(__file__).parents[2] / "deploy" / "systemd").glob("*.service"))


def _parse(path: Path) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read(path)
    return cp


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_is_hardened(unit: Path) -> None:
    svc = _parse(unit)["Service"]
    assert svc["User"] == "diskvault" and svc["Restart"] == "on-failure"
    assert svc["NoNewPrivileges"] == "true" and svc["PrivateTmp"] == "true"
    assert svc["ProtectSystem"] == "strict" and "/var/lib/diskvault" in svc["ReadWritePaths"]
    assert svc["ExecStart"].startswith("/opt/diskvault/.venv/bin/diskvault ")


def test_units_exist() -> None:
    assert {u.name for u in UNITS} == {"diskvault.service", "diskvault-worker.service"}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_systemd_analyze_verify(unit: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    # verify also complains that the ExecStart binary is absent on a dev box.
    problems = [
        line
        for line in out.stderr.splitlines()
        if line.strip() and "/opt/diskvault" not in line and "Command" not in line
    ]
    assert not problems, out.stderr
