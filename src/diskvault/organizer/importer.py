"""Bringing found images into the image library.

An ``import`` action copies the file into ``IMAGE_STORAGE_PATH/imports/``
(journaled like any copy, so a rollback removes that copy), then asks the image
library to import the copy (``diskvault.images.importer.request_import``),
which inspects it and queues its own import job; the image ids are reported.
The library only imports from ``IMPORT_ROOTS``, so that folder must be listed
there; if it is not, the copy stays in the folder and the reason is reported.
A rollback removes the copies, not library images made from them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from diskvault.config import Settings
from diskvault.db.engine import session_scope
from diskvault.domains import optional_module
from diskvault.storage import StorageProvider

IMPORT_FOLDER = "imports"


def import_root(settings: Settings) -> str:
    root = settings.image_dir / IMPORT_FOLDER
    root.mkdir(parents=True, exist_ok=True)
    return root.resolve().as_uri()


def hook(settings: Settings) -> Callable[[StorageProvider, str], str | None] | None:
    """The library's import request, adapted; None if the library has none."""
    module = optional_module("diskvault.images.importer")
    request: Callable[..., Any] | None = getattr(module, "request_import", None)
    if request is None:
        return None
    from diskvault.images.schemas import ImageImport

    def call(provider: StorageProvider, key: str) -> str | None:
        path = provider.local_path(key)
        if path is None:
            return None
        with session_scope(settings.DATABASE_URL) as session:
            image = request(session, settings, ImageImport(path=str(path)), owner="organizer")
            return str(image.id)

    return call
