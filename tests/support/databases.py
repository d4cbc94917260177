"""Throwaway PostgreSQL databases for the DB test matrix."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

DEFAULT_PG = "postgresql://127.0.0.1:5432/test"


def pg_base_url() -> str:
    return os.environ.get("DISKVAULT_TEST_DATABASE_URL", DEFAULT_PG)


def pg_reachable() -> bool:
    try:
        psycopg.connect(pg_base_url(), connect_timeout=3).close()
        return True
    except psycopg.Error:
        return False


@contextmanager
def temporary_pg_database() -> Iterator[str]:
    """Create a fresh database next to the test one, and drop it afterwards."""
    base = pg_base_url()
    name = f"diskvault_t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield base.rsplit("/", 1)[0] + "/" + name
    finally:
        from sqlalchemy import Engine

        from diskvault.db.engine import get_engine

        for url in list(_engines_for(name)):
            engine: Engine = get_engine(url)
            engine.dispose()
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _engines_for(name: str) -> Iterator[str]:
    from diskvault.db.engine import normalize_url

    base = pg_base_url().rsplit("/", 1)[0] + "/" + name
    yield base
    yield normalize_url(base)
