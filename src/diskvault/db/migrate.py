"""Apply Alembic migrations programmatically (``diskvault serve`` does this on start)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from diskvault.db.engine import normalize_url

HERE = Path(__file__).parent


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE / "alembic"))
    cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "heads") -> None:
    # Each domain's migrations branch from the foundation's; "heads" applies all.
    command.upgrade(alembic_config(url), revision)
