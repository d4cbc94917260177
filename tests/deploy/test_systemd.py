"""The systemd units are well-formed and carry the hardening we promise."""

import configparser
import os
import shutil
import subprocess
import sys
import time
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


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_stopping_the_unit_stops_its_whole_control_group(unit: Path) -> None:
    svc = _parse(unit)["Service"]
    assert svc["KillMode"] == "control-group"
    # uvicorn drains requests for 10 s, then jobs get SHUTDOWN_GRACE_S (15) to requeue.
    assert int(svc["TimeoutStopSec"]) >= 30


def _systemd_is_pid1() -> str | None:
    comm = Path("/proc/1/comm").read_text().strip()
    if comm != "systemd":
        return f"PID 1 is {comm!r}, not systemd: systemd-run --scope needs a running manager"
    if shutil.which("systemd-run") is None:
        return "systemd-run is not installed"
    return None


# Starts a tool the way diskvault does, prints its pid, and waits.
WITH_CHILD = (
    "from diskvault.tools.process import Process; import time; "
    "p = Process(['sleep', '120']); p.start(); print(p.proc.pid, flush=True); time.sleep(120)"
)


def test_a_scope_stop_leaves_no_tool_behind() -> None:
    reason = _systemd_is_pid1()
    if reason:
        pytest.skip(reason)
    unit = f"diskvault-test-{os.getpid()}"
    proc = subprocess.Popen(
        ["systemd-run", "--scope", "--quiet", f"--unit={unit}", sys.executable, "-c", WITH_CHILD],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    child = int(proc.stdout.readline())
    subprocess.run(["systemctl", "stop", f"{unit}.scope"], check=True, timeout=60)
    proc.wait(30)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{child}").exists()
