"""Imports every domain's models so Alembic and the app see all tables."""

from diskvault.db.base import Base
from diskvault.domains import domain_modules

MODELS = domain_modules("models")

__all__ = ["MODELS", "Base"]
