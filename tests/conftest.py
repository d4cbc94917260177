"""Fixtures shared by every test package.

``db_url`` runs a test on SQLite and, when it answers, PostgreSQL; the
PostgreSQL case is skipped with the reason printed when it does not.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from diskvault.config import Settings, load_settings
from support import demo_jobs  # noqa: F401  (registers the test job kinds)
from support.databases import pg_base_url, pg_reachable, temporary_pg_database
from support.server import ADMIN_PASSWORD, ServerProcess

_PG_OK: bool | None = None


def _pg_ok() -> bool:
    global _PG_OK
    if _PG_OK is None:
        _PG_OK = pg_reachable()
    return _PG_OK


@pytest.fixture(autouse=True)
def _runner_accepts_jobs() -> None:
    """An app stopped by an earlier test leaves the process's runner refusing jobs
    (as a real stop should); tests that run jobs without a host need it open."""
    from diskvault.jobs import runner

    runner.resume()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    if not _pg_ok():
        pytest.skip(f"PostgreSQL not reachable at {pg_base_url()}")
    with temporary_pg_database() as url:
        yield url


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return load_settings(
        DATA_DIR=tmp_path / "data",
        DATABASE_URL=db_url,
        ADMIN_PASSWORD=ADMIN_PASSWORD,
        WORKERS=0,
    )


@pytest.fixture
def app_client(settings: Settings) -> Iterator[TestClient]:
    """An in-process app on ``settings`` (migrated, admin bootstrapped)."""
    from diskvault.api.app import create_app

    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def admin_token(app_client: TestClient) -> str:
    resp = app_client.post(
        "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
    )
    assert resp.status_code == 200, resp.text
    token: str = resp.json()["access_token"]
    return token


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real ``diskvault serve`` subprocess shared by the session's e2e tests."""
    proc = ServerProcess(tmp_path_factory.mktemp("server"))
    proc.start()
    yield proc
    proc.stop()
