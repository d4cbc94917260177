"""``diskvault serve``: the API (and embedded worker) on embedded defaults."""

from __future__ import annotations

import threading
from types import FrameType

import typer


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
    )
    Server(config).run()
