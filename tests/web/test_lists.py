"""Issue 16 point 3: every console list sorts by its column headers and filters by text,
in SQL (the page shows the right rows of a larger table), through the services."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from diskvault.config import Settings
from diskvault.db.engine import session_scope
from diskvault.jobs.models import Job, JobStatus
from diskvault.organizer.models import Operation, OperationType
from support.console import sign_in


def _order(page: str, names: list[str]) -> list[str]:
    found = {n: page.find(n) for n in names if n in page}
    return sorted(found, key=lambda n: found[n])


def test_jobs_sort_and_filter(app_client: TestClient, settings: Settings) -> None:
    with session_scope(settings.DATABASE_URL) as s:
        for kind, owner in (
            ("backup-run", "zoe"),
            ("backup-verify", "amy"),
            ("image-process", "bob"),
        ):
            s.add(Job(kind=kind, owner=owner, status=JobStatus.failed, params={}))
    sign_in(app_client)
    by_owner = app_client.get("/jobs", params={"sort": "owner"}).text
    assert _order(by_owner, ["amy", "bob", "zoe"]) == ["amy", "bob", "zoe"]
    assert "Owner ▲" in by_owner
    desc = app_client.get("/jobs", params={"sort": "-owner"}).text
    assert _order(desc, ["amy", "bob", "zoe"]) == ["zoe", "bob", "amy"] and "Owner ▼" in desc
    only = app_client.get("/jobs", params={"q": "backup-"}).text
    assert "backup-run" in only and "backup-verify" in only and "image-process</a>" not in only
    assert 'value="backup-"' in only  # the filter box keeps its text
    # A stale or unknown sort key falls back to the default instead of failing.
    assert app_client.get("/jobs", params={"sort": "nonsense"}).status_code == 200


def test_operations_and_audit_filter(app_client: TestClient, settings: Settings) -> None:
    with session_scope(settings.DATABASE_URL) as s:
        for i, where in enumerate(("/srv/games", "/srv/isos", "/srv/vms")):
            s.add(Operation(id=f"{i:032x}", type=OperationType.scan, location=where, params={}))
    sign_in(app_client)
    page = app_client.get("/organizer", params={"q": "isos"}).text
    assert "/srv/isos" in page and "/srv/games" not in page and "/srv/vms" not in page
    page = app_client.get("/organizer", params={"sort": "location"}).text
    assert _order(page, ["/srv/games", "/srv/isos", "/srv/vms"]) == [
        "/srv/games", "/srv/isos", "/srv/vms",
    ]  # fmt: skip
    every = app_client.get("/admin").text
    users = set(re.findall(r'<td data-label="User">([^<]*)</td>', every))
    assert "admin" in users
    assert "Empty." in app_client.get("/admin", params={"q": "no-such-user"}).text
    mine = app_client.get("/admin", params={"q": "admin"}).text
    assert re.findall(r'<td data-label="User">([^<]*)</td>', mine)
