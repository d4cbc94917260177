"""Repository lookups are reads: the default repository is made at start-up only."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from diskvault.backups import repositories
from diskvault.backups.errors import RepositoryNotFound
from diskvault.backups.models import BackupRepository
from diskvault.config import load_settings
from diskvault.db.engine import session_scope
from diskvault.db.migrate import upgrade


def test_reading_the_default_repository_never_creates_it(tmp_path: Path) -> None:
    settings = load_settings(DATA_DIR=tmp_path / "data", WORKERS=0)
    upgrade(settings.DATABASE_URL)
    with session_scope(settings.DATABASE_URL) as s:
        for ref in (None, "default", "local"):
            with pytest.raises(RepositoryNotFound):
                repositories.get_repository(s, settings, ref)
        assert s.scalar(select(func.count()).select_from(BackupRepository)) == 0
        made = repositories.ensure_default_repository(s, settings)
        assert repositories.ensure_default_repository(s, settings).id == made.id  # once
        assert repositories.get_repository(s, settings, "local").id == made.id
        assert made.path == str(settings.backup_dir)
