"""Imports every package's models so Alembic and ``create_all`` see all tables."""

from diskvault.auth import models as auth_models
from diskvault.db.base import Base
from diskvault.jobs import models as job_models

__all__ = ["Base", "auth_models", "job_models"]
