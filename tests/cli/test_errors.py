"""Issue 17 point 6: exit codes documented and distinct (403 is not 401); REST hints in
messages become CLI commands; relative server paths resolved or refused."""

from __future__ import annotations

import os

import httpx
import pytest
from typer.testing import CliRunner

from diskvault.cli.client import (
    EXIT_CODES,
    STATUS_EXIT,
    ServerPathUnseen,
    api_error,
    server_path,
)
from diskvault.cli.main import app


def _problem(status: int, detail: str, path: str) -> httpx.Response:
    request = httpx.Request("GET", "http://127.0.0.1:8080" + path)
    return httpx.Response(status, json={"detail": detail}, request=request)


def test_forbidden_is_not_the_auth_code_and_every_code_is_in_help() -> None:
    forbidden = api_error(_problem(403, "outside DISKVAULT_BACKUP_RESTORE_ROOTS", "/api/v1/x"))
    unauthorized = api_error(_problem(401, "token expired", "/api/v1/x"))
    assert forbidden.exit_code_value == 9 != unauthorized.exit_code_value == 3
    assert set(STATUS_EXIT.values()) <= set(EXIT_CODES)
    out = CliRunner().invoke(app, ["--help"], terminal_width=200).output
    for code in EXIT_CODES:
        assert f"{code} " in out


def test_404_names_the_cli_command_not_the_rest_path() -> None:
    image = api_error(
        _problem(
            404,
            "image 3f2a was not found; list images with GET /api/v1/images",
            "/api/v1/images/3f2a",
        )
    )
    assert "'diskvault image list'" in image.message and "/api/v1" not in image.message
    job = api_error(_problem(404, "job 9d8c was not found", "/api/v1/jobs/9d8c"))
    assert job.message.endswith("list them with 'diskvault jobs list'")
    rollback = api_error(
        _problem(507, "roll back with POST /api/v1/operations/ab12/rollback", "/api/v1/operations")
    )
    assert "'diskvault organize rollback ab12'" in rollback.message


def test_relative_server_paths(tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert server_path("http://127.0.0.1:8080", "./r.raw", "--to") == f"{tmp_path}/r.raw"
    assert server_path("http://localhost:1", "/abs/r.raw", "--to") == "/abs/r.raw"
    with pytest.raises(ServerPathUnseen) as refused:
        server_path("https://vault.example.com", "./r.raw", "--to")
    assert "absolute path on the server" in refused.value.message
    assert refused.value.exit_code == 2


def test_a_succeeded_job_renders_a_full_bar() -> None:
    from diskvault.cli.progress import bar_position

    # convert --wait: the last progress (hashing) predates the end; the bar must say 100%
    last = {"status": "succeeded", "bytes_total": 1000, "bytes_done": 870, "percent": 87.0}
    assert bar_position(last) == (1000, 1000)
    assert bar_position({"status": "succeeded", "percent": 96.0}) == (100, 100)
    assert bar_position({"status": "running", "bytes_total": 1000, "bytes_done": 870}) == (
        1000,
        870,
    )


def test_version_and_help_do_not_load_rich_or_httpx() -> None:
    """Issue 17 point 7: start-up imports only what the command needs (no timing here)."""
    import subprocess
    import sys

    probe = (
        "import sys; sys.argv = ['diskvault', '{arg}']\n"
        "from diskvault.cli.entry import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('LOADED', sorted(m for m in ('typer', 'rich', 'httpx', 'diskvault.config')"
        " if m in sys.modules))"
    )
    for arg, allowed in (("version", []), ("--help", ["typer"])):
        out = subprocess.run(
            [sys.executable, "-c", probe.format(arg=arg)], capture_output=True, text=True
        )
        loaded = out.stdout.rsplit("LOADED ", 1)[1].strip()
        assert loaded == repr(allowed), (arg, loaded)


def test_an_api_command_loads_httpx_without_its_command_line_client() -> None:
    """httpx's own CLI (click, rich.syntax, pygments) is a third of an API command's start-up."""
    import subprocess
    import sys

    probe = (
        "import sys; sys.argv = ['diskvault', 'image', 'list']\n"
        "from diskvault.cli.entry import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('LOADED', sorted(m for m in ('httpx', 'pygments', 'rich.syntax')"
        " if m in sys.modules))"
    )
    env = {**os.environ, "DISKVAULT_URL": "http://127.0.0.1:9", "DISKVAULT_TOKEN": "x"}
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60
    )
    assert "127.0.0.1:9" in out.stderr  # the request was made (and failed: nothing listens)
    assert out.stdout.rsplit("LOADED ", 1)[1].strip() == repr(["httpx"]), out.stdout


def test_https_servers_are_still_verified() -> None:
    """Plain http skips building a TLS context (CA bundle load); https keeps verifying."""
    import ssl

    from diskvault.cli.client import Client

    secure = Client("https://vault.example.com", token="x").http
    ctx = secure._transport._pool._ssl_context  # type: ignore[attr-defined]
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
