"""Runs a real ``diskvault serve`` subprocess on a free 127.0.0.1 port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ADMIN_PASSWORD = "admin-password-for-tests"
BIN = Path(sys.executable).parent / "diskvault"
TESTS = Path(__file__).resolve().parent.parent


def diskvault_command(*args: str, demo_jobs: bool = False) -> list[str]:
    """``diskvault ARGS``; with ``demo_jobs``, the test job kinds and their submit route
    are loaded too (support/demo_cli.py), which needs :func:`with_tests_path`."""
    if demo_jobs:
        return [sys.executable, "-m", "support.demo_cli", *args]
    return [str(BIN), *args]


def with_tests_path(env: dict[str, str]) -> dict[str, str]:
    paths = [str(TESTS), *filter(None, [env.get("PYTHONPATH")])]
    return {**env, "PYTHONPATH": os.pathsep.join(paths)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServerProcess:
    def __init__(
        self, data_dir: Path, env: dict[str, str] | None = None, *, demo_jobs: bool = False
    ) -> None:
        self.data_dir = data_dir
        self.demo_jobs = demo_jobs
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "server.log"

    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "DISKVAULT_DATA_DIR": str(self.data_dir),
            "DISKVAULT_PORT": str(self.port),
            "DISKVAULT_BIND_HOST": "127.0.0.1",
            "DISKVAULT_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "DISKVAULT_LOG_FORMAT": "json",
        }
        if "DISKVAULT_TEST_DATABASE_URL" in os.environ and "DISKVAULT_DATABASE_URL" not in env:
            env["DISKVAULT_DATABASE_URL"] = os.environ["DISKVAULT_TEST_DATABASE_URL"]
        env.update(self.extra_env)
        return with_tests_path(env) if self.demo_jobs else env

    def start(self, timeout: float = 60) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        self.proc = subprocess.Popen(
            diskvault_command("serve", demo_jobs=self.demo_jobs),
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not become healthy:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def login(self, username: str = "admin", password: str = ADMIN_PASSWORD) -> str:
        resp = httpx.post(
            self.url + "/api/v1/auth/login", json={"username": username, "password": password}
        )
        resp.raise_for_status()
        token: str = resp.json()["access_token"]
        return token

    def client(self, token: str | None = None, **kw: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **kw)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
