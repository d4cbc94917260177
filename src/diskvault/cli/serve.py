"""``diskvault serve``: the API (and embedded worker) on embedded defaults."""

from __future__ import annotations

import threading
from types import FrameType
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from diskvault.config import Settings


def serve(
    host: str = typer.Option(None, "--host", help="bind address (DISKVAULT_BIND_HOST)"),
    port: int = typer.Option(None, "--port", help="TCP port (DISKVAULT_PORT)"),
) -> None:
    """Run the API server with the embedded worker (SQLite, local storage).

    Example: DISKVAULT_DATA_DIR=/srv/diskvault diskvault serve --port 8080
    """
    # Imported here: every other command starts faster without uvicorn and the settings.
    import uvicorn

    from diskvault.config import load_settings
    from diskvault.logging import configure

    overrides: dict[str, object] = {}
    if host:
        overrides["BIND_HOST"] = host
    if port:
        overrides["PORT"] = port
    settings = load_settings(**overrides)
    configure(settings.LOG_LEVEL, settings.LOG_FORMAT)
    from diskvault.preflight import warnings

    for line in warnings(settings):
        typer.echo(f"warning: {line}", err=True)

    from diskvault.api.app import create_app

    app = create_app(settings)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # Jobs stop at the signal, not after uvicorn has drained open requests.
            worker = app.state.worker
            if worker is not None:
                threading.Thread(target=worker.begin_stop, daemon=True).start()
            super().handle_exit(sig, frame)

    config = uvicorn.Config(
        app,
        host=settings.BIND_HOST,
        port=settings.PORT,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
        **proxy_options(settings),
    )
    Server(config).run()


def proxy_options(settings: Settings) -> dict[str, Any]:
    """uvicorn believes X-Forwarded-For from 127.0.0.1 unless told otherwise: trust no one
    but DISKVAULT_TRUSTED_PROXIES, so a client cannot pick its own address (rate limits)."""
    if not settings.TRUSTED_PROXIES:
        return {"proxy_headers": False, "forwarded_allow_ips": []}
    return {"proxy_headers": True, "forwarded_allow_ips": list(settings.TRUSTED_PROXIES)}
