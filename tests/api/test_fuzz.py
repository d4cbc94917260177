"""Issue 14 item 5: schemathesis against a real ``diskvault serve``, as each role.

``--checks all`` (plus ``model_matches_schema``, see st_sandbox.py): no 5xx, no
status or problem the OpenAPI document does not declare, no response off its
schema. Bounded and seeded here; ``make fuzz`` runs it longer
(``DV_FUZZ_EXAMPLES``). The fuzzer's paths and URLs stay in a sandbox
directory and on 127.0.0.1 (st_sandbox.py).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from diskvault.tools.tgt import MAX_CONTROL_PORT, SOCKET_DIR
from support.server import ServerProcess

HERE = Path(__file__).parent
ST = Path(sys.executable).parent / "st"
EXAMPLES = os.environ.get("DV_FUZZ_EXAMPLES", "5")
SEED = os.environ.get("DV_FUZZ_SEED", "1")
# Admin last: its run may deactivate or re-password the other users (not itself).
ROLES = ("viewer", "operator", "admin")


def _unused_tgt_port() -> str:
    """A tgtd control port no tgtd listens on: target calls fail cleanly, touching none."""
    rng = random.Random()
    while True:
        port = rng.randrange(20000, MAX_CONTROL_PORT + 1)
        if not (SOCKET_DIR / f"socket.{port}").exists():
            return str(port)


def _add_users(srv: ServerProcess) -> None:
    with srv.client(srv.login()) as api:
        for role in ("operator", "viewer"):
            body = {"username": f"fuzz-{role}", "password": "fuzz-password", "role": role}
            assert api.post("/api/v1/auth/signup", json=body).status_code == 201


def _token(srv: ServerProcess, role: str) -> str:
    return srv.login() if role == "admin" else srv.login(f"fuzz-{role}", "fuzz-password")


def _run(srv: ServerProcess, token: str, sandbox: Path) -> subprocess.CompletedProcess[str]:
    me = httpx.get(srv.url + "/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "st_sandbox",
        "PYTHONPATH": str(HERE),
        "DV_FUZZ_SANDBOX": str(sandbox),
        "DV_FUZZ_SELF_ID": me.json()["id"],
    }
    cmd = [
        str(ST),
        "--config-file",
        str(HERE / "schemathesis.toml"),
        "run",
        f"{srv.url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        EXAMPLES,
        "--seed",
        SEED,
        "--workers",
        "2",
        "--header",
        f"Authorization: Bearer {token}",
        "--no-color",
    ]
    # cwd: schemathesis keeps its example database (.schemathesis/) there.
    return subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=1500, cwd=sandbox.parent
    )


def _failures(report: str) -> str:
    """The report's FAILURES section: each failing operation, its check and a curl line."""
    start = report.find("FAILURES")
    end = report.find("SUMMARY", start)
    return report[start:end] if start >= 0 else report[-6000:]


@pytest.mark.timeout(1800)
def test_schemathesis_finds_nothing_for_any_role(tmp_path: Path) -> None:
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    srv = ServerProcess(
        tmp_path / "data",
        env={"DISKVAULT_TGT_CONTROL_PORT": _unused_tgt_port(), "DISKVAULT_WORKERS": "1"},
    )
    srv.start()
    try:
        _add_users(srv)
        failed = {}
        for role in ROLES:
            done = _run(srv, _token(srv, role), sandbox)
            (tmp_path / f"schemathesis-{role}.txt").write_text(done.stdout + done.stderr)
            if done.returncode != 0:
                failed[role] = _failures(done.stdout)[:12000] + done.stderr[-2000:]
        assert not failed, "\n\n".join(f"== as {r}:\n{out}" for r, out in failed.items())
        assert "unhandled error" not in srv.log()
    finally:
        srv.stop()
