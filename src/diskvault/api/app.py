"""The FastAPI application factory."""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.middleware.gzip import GZipMiddleware

from diskvault import __version__, web
from diskvault.api import guard, middleware, options, problems, refs, responses, strict, system
from diskvault.auth import service as auth_service
from diskvault.config import Settings
from diskvault.db import migrate
from diskvault.db.engine import session_scope
from diskvault.domains import domain_modules
from diskvault.jobs import queue as job_queue
from diskvault.jobs.worker import WorkerHost

log = structlog.get_logger("diskvault")

# Routes (method, path template) whose bodies stream to disk and so are exempt
# from MAX_BODY_BYTES; matched exactly after routing (auth is still checked first).
STREAMING_UPLOADS = frozenset({("POST", "/api/v1/images/upload")})


def prepare_database(settings: Settings) -> None:
    """Apply migrations and create the first admin (its generated password printed once)."""
    migrate.upgrade(settings.DATABASE_URL)
    with session_scope(settings.DATABASE_URL) as session:
        generated = auth_service.bootstrap_admin(session, settings.ADMIN_PASSWORD)
    if generated:
        print(
            f"diskvault: created user 'admin' with password: {generated}\n"
            "diskvault: this is shown once; change it or set DISKVAULT_ADMIN_PASSWORD.",
            file=sys.stderr,
            flush=True,
        )
        log.warning("admin user created with a generated password (printed once on stderr)")


def _audit(settings: Settings) -> middleware.AuditFn:
    def record(scope: MutableMapping[str, Any], status: int) -> None:
        principal = scope["state"]["principal"]
        with session_scope(settings.DATABASE_URL) as session:
            auth_service.record_audit(
                session,
                username=principal.username,
                action=f"{scope['method']} {getattr(scope.get('route'), 'path', scope['path'])}",
                target=scope["path"],
                status=status,
                request_id=scope["state"].get("request_id"),
            )

    return record


def create_app(settings: Settings, *, run_startup: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if run_startup:
            prepare_database(settings)
        worker = WorkerHost(settings, workers=settings.WORKERS)
        app.state.worker = worker
        worker.start()
        for hook in app.state.startup_hooks:
            hook(app)
        log.info("diskvault started", version=__version__, node=settings.NODE)
        try:
            yield
        finally:
            for hook in reversed(app.state.shutdown_hooks):
                hook(app)
            worker.stop()

    app = FastAPI(
        title="diskvault",
        version=__version__,
        description="Disk-image library, diskless boot over iSCSI, QCOW2 backups, organizer.",
        lifespan=lifespan,
        # One place for every route: unknown query parameters refused, path ids resolved from
        # prefixes and names (api/refs.py), common problems declared.
        dependencies=[Depends(strict.refuse_unknown_query), Depends(refs.resolve_path_refs)],
        responses=responses.COMMON,
    )
    app.state.settings = settings
    app.state.started = time.monotonic()
    app.state.startup_hooks = []
    app.state.shutdown_hooks = []
    app.state.worker = None
    app.state.queue_ping = lambda: job_queue.ping(settings)

    problems.install(app)
    app.include_router(system.router)
    for module in domain_modules("endpoints"):
        for name in ("router", "ws_router", "public_router"):
            if hasattr(module, name):
                app.include_router(getattr(module, name))
        if hasattr(module, "startup"):
            app.state.startup_hooks.append(module.startup)
        if hasattr(module, "shutdown"):
            app.state.shutdown_hooks.append(module.shutdown)
    web.install(app)  # the console's pages, static files and HTML error pages

    app.add_middleware(options.Options)
    app.add_middleware(GZipMiddleware, minimum_size=1024)
    # Inside CORS (a preflight carries no token), outside everything that reads a body.
    app.add_middleware(guard.Gate, settings=settings, streaming=STREAMING_UPLOADS)
    if settings.CORS_ORIGINS:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.CORS_ORIGINS,
            allow_credentials=True,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    app.add_middleware(middleware.RequestContext, audit=_audit(settings))
    return app
