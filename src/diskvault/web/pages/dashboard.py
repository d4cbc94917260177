"""The dashboard: health, free space, live jobs, the last day's failures, counts, schedule."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from diskvault.api import system
from diskvault.api.deps import DbDep, SettingsDep
from diskvault.web import overview
from diskvault.web.render import render
from diskvault.web.session import ReaderDep

router = APIRouter()


@router.get("/")
def dashboard(request: Request, who: ReaderDep, db: DbDep, settings: SettingsDep) -> Response:
    context = {
        "status": system.status(request, who.principal, settings),
        "counts": overview.counts(db),
        "items": overview.active_jobs(db),
        "failures": overview.recent_failures(db),
        "repositories": overview.repositories(db),
        "policies": overview.next_policy_runs(db),
    }
    return render(request, "dashboard.html", who, context)
