"""HTTP client for the CLI: stored URL and token, problem+json mapped to errors."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx

from diskvault.errors import DiskvaultError

DEFAULT_URL = "http://127.0.0.1:8080"


class ApiError(DiskvaultError):
    """An error answered by the server; its status picks the CLI exit code."""

    title = "API error"

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.http_status = status
        self.exit_code_value = {401: 3, 403: 3, 404: 4, 409: 5, 422: 2, 400: 2}.get(status, 1)


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


def server_url(explicit: str | None = None) -> str:
    return (
        explicit or os.environ.get("DISKVAULT_URL") or load_config().get("url") or DEFAULT_URL
    ).rstrip("/")


class Client:
    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30):
        self.url = server_url(url)
        cfg = load_config()
        self.token = token or os.environ.get("DISKVAULT_TOKEN") or cfg.get("token")
        self.http = httpx.Client(base_url=self.url, timeout=timeout)

    def _headers(self, auth: bool) -> dict[str, str]:
        if not auth:
            return {}
        if not self.token:
            raise NotLoggedIn(url=self.url)
        return {"Authorization": f"Bearer {self.token}"}

    def request(self, method: str, path: str, *, auth: bool = True, **kw: Any) -> Any:
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

    def post(self, path: str, **kw: Any) -> Any:
        return self.request("POST", path, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.request("DELETE", path, **kw)


def api_error(resp: httpx.Response) -> ApiError:
    try:
        body = resp.json()
        detail = body.get("detail") or body.get("title") or resp.reason_phrase
    except ValueError:
        detail = resp.text[:200] or resp.reason_phrase
    return ApiError(resp.status_code, f"{resp.status_code}: {detail}")
