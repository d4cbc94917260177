"""Health, status and metrics endpoints."""

from __future__ import annotations

import shutil
import time
from typing import Any

from fastapi import APIRouter, Request, Response

from diskvault import __version__
from diskvault.api import metrics
from diskvault.api.deps import PrincipalDep, SettingsDep
from diskvault.db.engine import ping

router = APIRouter(tags=["system"])


@router.get("/health", summary="Liveness probe (no auth)")
async def health() -> dict[str, str]:
    # async: answered on the event loop, never queued behind busy worker threads
    return {"status": "ok"}


@router.get("/api/v1/status", summary="Version, uptime, DB/queue reachability, free space")
def status(request: Request, _: PrincipalDep, settings: SettingsDep) -> dict[str, Any]:
    storage = {}
    for name, path in settings.storage_paths().items():
        try:
            usage = shutil.disk_usage(path)
            storage[name] = {
                "path": str(path),
                "free_bytes": usage.free,
                "total_bytes": usage.total,
            }
        except OSError as exc:
            storage[name] = {"path": str(path), "error": exc.strerror}
    queue_ping = getattr(request.app.state, "queue_ping", None)
    return {
        "version": __version__,
        "uptime_s": round(time.monotonic() - request.app.state.started, 1),
        "node": settings.NODE,
        "database": {
            "backend": settings.DATABASE_URL.split(":", 1)[0],
            "ok": ping(settings.DATABASE_URL),
        },
        "queue": {
            "backend": "redis" if settings.QUEUE_URL else "embedded",
            "ok": bool(queue_ping()) if queue_ping else True,
        },
        "storage": storage,
    }


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def prometheus(_: PrincipalDep) -> Response:
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
