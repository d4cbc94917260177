"""HTTP client for the CLI: stored URL and token, problem+json mapped to errors."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from diskvault.errors import DiskvaultError

if TYPE_CHECKING:
    import httpx  # imported when a request is made: `diskvault --help` starts faster

DEFAULT_URL = "http://127.0.0.1:8080"


# Exit codes of every command (listed in ``diskvault --help``); one per kind of failure.
EXIT_CODES = {
    0: "success",
    1: "other error",
    2: "bad input (400, 413, 416, 422)",
    3: "not logged in, or the token was refused (401)",
    4: "not found (404)",
    5: "conflict: busy, exists, ambiguous (409)",
    6: "server unreachable or unavailable (503)",
    7: "not enough storage (507)",
    8: "the job failed",
    9: "forbidden: role or roots check (403)",
    10: "a tool (qemu-img, tgtadm...) failed",
    78: "configuration error",
    130: "interrupted",
}
STATUS_EXIT = {400: 2, 401: 3, 403: 9, 404: 4, 409: 5, 413: 2, 416: 2, 422: 2, 503: 6, 507: 7}


class ApiError(DiskvaultError):
    """An error answered by the server; its status picks the CLI exit code."""

    title = "API error"

    def __init__(self, status: int, detail: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.http_status = status
        self.exit_code_value = STATUS_EXIT.get(status, 1)
        self.body = body  # the server's problem+json, as received

    def problem(self) -> dict[str, Any]:
        return self.body or {**super().problem(), "status": self.http_status}


class NotLoggedIn(DiskvaultError):
    template = "not logged in to {url}: run 'diskvault login' (or set DISKVAULT_TOKEN)"
    exit_code = 3


class Unreachable(DiskvaultError):
    template = "cannot reach diskvault at {url}: {reason}. Is 'diskvault serve' running?"
    exit_code = 6


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "diskvault"


def load_config() -> dict[str, Any]:
    path = config_dir() / "cli.json"
    if path.exists():
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    return {}


def save_config(data: dict[str, Any]) -> Path:
    directory = config_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / "cli.json"
    tmp = path.with_suffix(".partial")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


class ServerPathUnseen(DiskvaultError):
    template = (
        "{option} {path} is relative, and the server at {url} runs on another host where "
        "it means nothing: give the absolute path on the server"
    )
    exit_code = 2


def server_path(url: str, path: str, option: str) -> str:
    """A path the server will open: relative ones are made absolute here when the server
    is on this host (a loopback URL); for a remote server they are refused."""
    if os.path.isabs(path):
        return path
    host = urlsplit(url).hostname or ""
    if host in ("localhost", "::1") or host.startswith("127."):
        return os.path.abspath(path)
    raise ServerPathUnseen(option=option, path=path, url=url)


def server_url(explicit: str | None = None) -> str:
    return (
        explicit or os.environ.get("DISKVAULT_URL") or load_config().get("url") or DEFAULT_URL
    ).rstrip("/")


class Client:
    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30):
        self.url = server_url(url)
        cfg = load_config()
        self.token = token or os.environ.get("DISKVAULT_TOKEN") or cfg.get("token")
        import httpx

        # Plain http needs no TLS context; making one loads the CA bundle (~90 ms a command).
        tls = self.url.startswith("https://")
        self.http = httpx.Client(base_url=self.url, timeout=timeout, verify=tls)

    def _headers(self, auth: bool) -> dict[str, str]:
        if not auth:
            return {}
        if not self.token:
            raise NotLoggedIn(url=self.url)
        return {"Authorization": f"Bearer {self.token}"}

    def request(self, method: str, path: str, *, auth: bool = True, **kw: Any) -> Any:
        import httpx

        headers = {**self._headers(auth), **kw.pop("headers", {})}
        try:
            resp = self.http.request(method, path, headers=headers, **kw)
        except httpx.TransportError as exc:
            raise Unreachable(url=self.url, reason=str(exc) or type(exc).__name__) from None
        if resp.status_code >= 400:
            raise api_error(resp)
        if resp.status_code == 204 or not resp.content:
            return None
        if "json" in resp.headers.get("content-type", ""):
            return resp.json()
        return resp.text

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def full_id(self, collection: str, ref: str) -> str:
        """The full id of ``collection``'s object named by ``ref`` (an id, a unique prefix
        of 4+ characters or a name): the server applies the one rule (db/lookup.py)."""
        if len(ref) == 32:
            return ref
        from urllib.parse import quote

        return str(self.get(f"{collection}/{quote(ref, safe='')}")["id"])

    def post(self, path: str, **kw: Any) -> Any:
        return self.request("POST", path, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.request("DELETE", path, **kw)


def api_error(resp: httpx.Response) -> ApiError:
    body = None
    try:
        body = resp.json()
        detail = body.get("detail") or body.get("title") or resp.reason_phrase
    except ValueError:
        detail = resp.text[:200] or resp.reason_phrase
    detail = cli_hints(str(detail), resp.status_code, resp.request.url.path)
    problem = body if isinstance(body, dict) else None
    return ApiError(resp.status_code, f"{resp.status_code}: {detail}", problem)


# The command a CLI user runs to find ids, per API collection.
LIST_COMMANDS = {
    "images": "diskvault image list",
    "operations": "diskvault organize list",
    "jobs": "diskvault jobs list",
    "targets": "diskvault target list",
    "machines": "diskvault machine list",
    "restore": "diskvault restore list",
    "backup": "diskvault backup list --vm NAME",
    "sources": "diskvault source list",
    "repositories": "diskvault backup repo list",
    "policies": "diskvault backup policy list",
}
_REST_LIST = re.compile(r"GET /api/v1/([a-z-]+)\b(?![/?])")
_REST_ROLLBACK = re.compile(r"POST /api/v1/operations/(\S+)/rollback")


def cli_hints(detail: str, status: int, path: str) -> str:
    """Messages name CLI commands, not REST paths; a 404 says how to list what is there."""
    detail = _REST_ROLLBACK.sub(r"'diskvault organize rollback \1'", detail)
    detail = _REST_LIST.sub(
        lambda m: f"'{LIST_COMMANDS[m[1]]}'" if m[1] in LIST_COMMANDS else m[0], detail
    )
    parts = path.split("/")
    kind = parts[3] if len(parts) > 3 and path.startswith("/api/v1/") else ""
    if status == 404 and "diskvault " not in detail and kind in LIST_COMMANDS:
        detail += f"; list them with '{LIST_COMMANDS[kind]}'"
    return detail
