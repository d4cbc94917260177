"""A real ``diskvault serve`` subprocess: login, me, status, roles, CLI."""

import os
import subprocess
import sys
from pathlib import Path

import httpx

from support.http import assert_problem, auth
from support.server import ADMIN_PASSWORD, ServerProcess

BIN = str(Path(sys.executable).parent / "diskvault")


def test_login_me_status_roles(server: ServerProcess) -> None:
    token = server.login()
    with server.client(token) as c:
        assert c.get("/api/v1/auth/me").json()["username"] == "admin"
        status = c.get("/api/v1/status").json()
        assert status["database"]["ok"] and status["storage"]["DATA_DIR"]["free_bytes"] > 0
        created = c.post(
            "/api/v1/auth/signup",
            json={"username": "e2e-viewer", "password": "viewer-password", "role": "viewer"},
        )
        assert created.status_code == 201
    viewer = server.login("e2e-viewer", "viewer-password")
    with server.client(viewer) as c:
        assert_problem(c.post("/api/v1/auth/tokens", json={"name": "nope"}), 403)
    bad = httpx.post(
        server.url + "/api/v1/auth/login", json={"username": "admin", "password": "wrong"}
    )
    assert_problem(bad, 401)


def test_cli_login_status_against_server(server: ServerProcess, tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path), "DISKVAULT_URL": server.url}
    login = subprocess.run(
        [BIN, "login", "-u", "admin", "-p", ADMIN_PASSWORD],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert login.returncode == 0, login.stderr
    stored = (tmp_path / "diskvault" / "cli.json").read_text()
    assert "dvt_" in stored
    assert (tmp_path / "diskvault" / "cli.json").stat().st_mode & 0o777 == 0o600
    status = subprocess.run([BIN, "status"], env=env, capture_output=True, text=True, timeout=60)
    assert status.returncode == 0 and "database: sqlite ok" in status.stdout
    logout = subprocess.run([BIN, "logout"], env=env, capture_output=True, text=True, timeout=60)
    assert logout.returncode == 0
    again = subprocess.run([BIN, "status"], env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 3 and "not logged in" in again.stderr


def test_first_start_prints_generated_admin_password(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path / "fresh", env={"DISKVAULT_ADMIN_PASSWORD": ""})
    with proc:
        line = next(x for x in proc.log().splitlines() if "with password:" in x)
        password = line.rsplit(": ", 1)[1].strip()
        assert server_login_works(proc, password)
    proc.start()  # second start: no new password printed
    proc.stop()
    assert proc.log().count("with password:") == 1


def server_login_works(proc: ServerProcess, password: str) -> bool:
    resp = httpx.post(
        proc.url + "/api/v1/auth/login", json={"username": "admin", "password": password}
    )
    return resp.status_code == 200 and bool(auth(resp.json()["access_token"]))
