"""Sources and repositories from their request schemas: one path for the API and the console."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter
from sqlalchemy.orm import Session

from diskvault.backups import repositories, service
from diskvault.backups.models import BackupRepository, BackupSource, SourceKind
from diskvault.backups.schemas import RepositoryCreate, SourceCreate
from diskvault.config import Settings

SOURCE_SCHEMA: TypeAdapter[Any] = TypeAdapter(SourceCreate)


def add_source(session: Session, body: Any) -> BackupSource:
    """``body`` is one of the SourceCreate variants; each kind keeps its own fields."""
    config = body.model_dump(exclude={"name", "kind", "unverified"}, exclude_none=True)
    kind = SourceKind(body.kind)
    return service.create_source(session, body.name, kind, config, unverified=body.unverified)


def add_repository(
    session: Session, settings: Settings, body: RepositoryCreate
) -> tuple[BackupRepository, str | None]:
    """The repository, and its paper key when a key was made for it (shown once)."""
    repo = repositories.create_repository(
        session,
        settings,
        name=body.name,
        kind=body.kind,
        path=body.path,
        url=body.url,
        immutability_days=body.immutability_days,
        encryption=body.encryption,
        compression=body.compression,
        key_file=body.key_file,
        create_key=body.create_key,
    )
    paper: str | None = getattr(repo, "paper_key", None)
    if body.attach:
        repositories.rescan(session, repo)
    return repo, paper
