from pathlib import Path

from sqlalchemy import inspect, select, text

from diskvault.auth.models import Role, User
from diskvault.db.engine import get_engine, session_scope
from diskvault.db.migrate import upgrade


def test_migrations_create_every_model_table(db_url: str) -> None:
    from diskvault.db.models import Base

    upgrade(db_url)
    tables = set(inspect(get_engine(db_url)).get_table_names())
    assert set(Base.metadata.tables) <= tables
    upgrade(db_url)  # idempotent


def test_roundtrip_and_rollback(db_url: str) -> None:
    upgrade(db_url)
    with session_scope(db_url) as s:
        s.add(User(username="u1", password_hash="x", role=Role.viewer))
    try:
        with session_scope(db_url) as s:
            s.add(User(username="u2", password_hash="x", role=Role.viewer))
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    with session_scope(db_url) as s:
        names = set(s.scalars(select(User.username)))
        created = s.scalar(select(User.created_at).where(User.username == "u1"))
    assert names == {"u1"}
    assert created is not None and created.tzinfo is not None


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'wal.db'}"
    with get_engine(url).connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
