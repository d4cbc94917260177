"""login, logout, status, version."""

from __future__ import annotations

import getpass
import json

import typer

from diskvault import __version__
from diskvault.cli.client import Client, load_config, save_config, server_url
from diskvault.cli.common import console, human_bytes


def login(
    username: str = typer.Option("admin", "--username", "-u", help="user to log in as"),
    password: str = typer.Option(
        None, "--password", "-p", envvar="DISKVAULT_PASSWORD", help="password (prompted if unset)"
    ),
    url: str = typer.Option(None, "--url", envvar="DISKVAULT_URL", help="server URL"),
) -> None:
    """Log in and store a token in ~/.config/diskvault/.

    Example: diskvault login -u admin --url http://127.0.0.1:8080
    """
    target = server_url(url)
    if password is None:
        password = getpass.getpass(f"password for {username}@{target}: ")
    client = Client(target)
    tokens = client.post(
        "/api/v1/auth/login", auth=False, json={"username": username, "password": password}
    )
    client.token = tokens["access_token"]
    # A named API token outlives the short access token, so store that instead.
    created = client.post("/api/v1/auth/tokens", json={"name": f"cli@{username}"})
    path = save_config(
        {**load_config(), "url": target, "token": created["token"], "username": username}
    )
    console.print(f"logged in to {target} as [bold]{username}[/]; token stored in {path}")


def logout() -> None:
    """Revoke the stored token and forget it.

    Example: diskvault logout
    """
    cfg = load_config()
    if cfg.get("token"):
        client = Client()
        for tok in client.get("/api/v1/auth/tokens"):
            if tok["name"] == f"cli@{cfg.get('username')}" and tok["revoked_at"] is None:
                client.delete(f"/api/v1/auth/tokens/{tok['id']}")
    cfg.pop("token", None)
    save_config(cfg)
    console.print("logged out")


def status(
    as_json: bool = typer.Option(False, "--json", help="print raw JSON"),
) -> None:
    """Show server version, uptime, DB and queue health, and free space.

    Example: diskvault status
    """
    data = Client().get("/api/v1/status")
    if as_json:
        console.print_json(json.dumps(data))
        return
    console.print(f"diskvault {data['version']} on {data['node']}, up {data['uptime_s']:.0f}s")
    db, queue = data["database"], data["queue"]
    console.print(f"database: {db['backend']} {'ok' if db['ok'] else '[red]unreachable[/]'}")
    console.print(f"queue:    {queue['backend']} {'ok' if queue['ok'] else '[red]unreachable[/]'}")
    for name, info in data["storage"].items():
        free = human_bytes(info.get("free_bytes"))
        console.print(f"{name}: {info['path']} ({free} free)")


def version() -> None:
    """Print the diskvault version.

    Example: diskvault version
    """
    console.print(f"diskvault {__version__}")
