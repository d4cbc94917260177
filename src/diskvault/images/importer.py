"""Imports from a server-side path (inside IMPORT_ROOTS only) or an http(s) URL.

A path is resolved with every symlink followed and must stay inside a root;
the file is then opened once without following links and re-checked through
``/proc/self/fd``, so swapping a symlink after the check reads nothing else.
A file with more than one hard link is refused: another of its names could lie
outside the roots, and only a walk of the whole filesystem could tell.
URLs are vetted and fetched by :mod:`diskvault.images.urls`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from diskvault.config import Settings
from diskvault.images import files, service, staging
from diskvault.images.errors import ImportFailed, ImportRefused
from diskvault.images.models import Image
from diskvault.images.schemas import ImageImport
from diskvault.images.urls import check_url
from diskvault.jobs import service as jobs
from diskvault.storage import redact_url
from diskvault.storage.base import os_errors

# -- paths --------------------------------------------------------------------


def _roots(settings: Settings) -> list[Path]:
    if not settings.IMPORT_ROOTS:
        raise ImportRefused("no import roots are configured; set DISKVAULT_IMPORT_ROOTS")
    return [root.resolve() for root in settings.IMPORT_ROOTS]


def _inside(path: Path, roots: list[Path]) -> bool:
    return any(path.is_relative_to(root) for root in roots)


@contextmanager
def open_import_path(settings: Settings, raw: str) -> Iterator[Path]:
    """Yield a ``/proc/self/fd`` path to the checked, opened file named by ``raw``."""
    if "\0" in raw:
        raise ImportFailed(source="the given path", detail="a path cannot hold a NUL byte")
    roots = _roots(settings)
    given = Path(raw)
    # Refuse before touching the filesystem, so outside paths cannot be probed.
    if not given.is_absolute() or not _inside(Path(os.path.normpath(given)), roots):
        raise ImportRefused(f"{raw} is not inside an import root ({', '.join(map(str, roots))})")
    try:
        real = given.resolve(strict=True)
    except (OSError, RuntimeError):
        raise ImportFailed(source=raw, detail="no such file") from None
    if not _inside(real, roots):
        raise ImportRefused(f"{raw} leads outside the import roots through a symlink")
    with os_errors(raw, "the import roots"):
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ImportRefused(f"{raw} is not a regular file")
        if st.st_nlink > 1:
            # Its other names may lie outside the roots (a link to /etc/shadow), and
            # finding them would mean walking the whole filesystem.
            raise ImportRefused(
                f"{raw} has {st.st_nlink} hard links; hard-linked files are refused "
                "because their other names may lie outside the import roots; "
                "copy the file into the root (cp) and import the copy"
            )
        if not _inside(Path(os.readlink(f"/proc/self/fd/{fd}")), roots):
            raise ImportRefused(f"{raw} changed while it was being opened")
        yield Path(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def copy_path(settings: Settings, raw: str, dest: Path) -> tuple[int, str]:
    """Copy the file into ``dest`` (holes kept, reflinked where possible); (size, sha256)."""
    with open_import_path(settings, raw) as src, os_errors(dest.name, "TEMP_STORAGE_PATH"):
        files.copy_sparse(src, dest)
    return dest.stat().st_size, files.sha256_file(dest)


def request_import(
    session: Session, settings: Settings, body: ImageImport, *, owner: str | None
) -> Image:
    """Check the source now (a path's headers are inspected at once), then queue the import."""
    if body.path is not None:
        with open_import_path(settings, body.path) as src:
            staging.inspect_staged(settings, src, body.format)
        source, params = body.path, {"path": body.path}
        name = body.name or Path(body.path).name
    else:
        assert body.url is not None
        check_url(settings, body.url)
        source, params = redact_url(body.url), {"url": body.url}
        name = body.name or Path(urlsplit(body.url).path).name or "import"
    image = service.create(
        session,
        settings,
        name=name,
        owner=owner,
        source=source,
        image_type=body.image_type,
        target_format=body.target_format,
        claimed_format=body.format,
    )
    job = jobs.submit(
        settings,
        "image-import",
        {"image_id": image.id, **params},
        node=staging.job_node(settings, staged=True),
        owner=owner,
        session=session,
    )
    image.job_id = job.id
    session.commit()
    return image
