"""Imports from a server-side path (inside IMPORT_ROOTS only) or an http(s) URL.

A path is resolved with every symlink followed and must stay inside a root;
the file is then opened once without following links and re-checked through
``/proc/self/fd``, so swapping a symlink after the check reads nothing else.
A URL must use an allowed host and port, and so must every redirect.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
from sqlalchemy.orm import Session

from diskvault.config import Settings
from diskvault.images import files, service
from diskvault.images.errors import ImportFailed, ImportRefused, UploadTooLarge
from diskvault.images.models import Image
from diskvault.images.schemas import ImageImport
from diskvault.jobs import service as jobs
from diskvault.storage import redact_url
from diskvault.storage.base import os_errors
from diskvault.tools.process import Cancelled

MAX_REDIRECTS = 5
CHUNK = 1024 * 1024
DEFAULT_PORTS = {"http": 80, "https": 443}

Cancel = Callable[[], bool]
Progress = Callable[[int, int | None], None]


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
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ImportRefused(f"{raw} is not a regular file")
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
    settings: Settings, session: Session, body: ImageImport, *, owner: str | None
) -> Image:
    """Check the source now (a path's headers are inspected at once), then queue the import."""
    if body.path is not None:
        with open_import_path(settings, body.path) as src:
            service.inspect_staged(settings, src, body.format)
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
        node=service.job_node(settings, staged=True),
        owner=owner,
        session=session,
    )
    image.job_id = job.id
    session.commit()
    return image


# -- URLs ---------------------------------------------------------------------


def check_url(settings: Settings, url: str) -> None:
    parts = urlsplit(url)
    shown = redact_url(url)
    scheme = parts.scheme.lower()
    if parts.username is not None or parts.password is not None:
        raise ImportRefused(f"{shown}: credentials in URLs are refused (they would be stored)")
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        raise ImportRefused(f"{shown}: only http:// and https:// URLs with a host can be imported")
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        raise ImportRefused(f"{shown}: invalid port") from None
    if port not in settings.IMPORT_URL_ALLOWED_PORTS:
        raise ImportRefused(
            f"{shown}: port {port} is not allowed; allowed: "
            f"{settings.IMPORT_URL_ALLOWED_PORTS} (DISKVAULT_IMPORT_URL_ALLOWED_PORTS)"
        )
    hosts = [h.lower() for h in settings.IMPORT_URL_ALLOWED_HOSTS]
    if hosts and parts.hostname.lower() not in hosts:
        raise ImportRefused(
            f"{shown}: host {parts.hostname} is not allowed (DISKVAULT_IMPORT_URL_ALLOWED_HOSTS)"
        )


def fetch_url(
    settings: Settings,
    url: str,
    dest: Path,
    *,
    limit: int,
    progress: Progress | None = None,
    should_cancel: Cancel | None = None,
) -> tuple[int, str]:
    """Download ``url`` into ``dest`` with its SHA-256, following only allowed redirects."""
    timeout = httpx.Timeout(settings.IMPORT_URL_TIMEOUT_S)
    with httpx.Client(follow_redirects=False, timeout=timeout, trust_env=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            check_url(settings, url)
            try:
                with client.stream("GET", url, headers={"Accept-Encoding": "identity"}) as resp:
                    if resp.is_redirect:
                        url = urljoin(url, resp.headers.get("location", ""))
                        continue
                    if resp.status_code != 200:
                        raise ImportFailed(
                            source=redact_url(url), detail=f"HTTP {resp.status_code}"
                        )
                    return _save(resp, dest, limit, progress, should_cancel)
            except httpx.HTTPError as exc:
                detail = str(exc) or type(exc).__name__
                raise ImportFailed(source=redact_url(url), detail=detail) from exc
    raise ImportFailed(source=redact_url(url), detail=f"more than {MAX_REDIRECTS} redirects")


def _save(
    resp: httpx.Response,
    dest: Path,
    limit: int,
    progress: Progress | None,
    should_cancel: Cancel | None,
) -> tuple[int, str]:
    length = resp.headers.get("content-length")
    total = int(length) if length and length.isdigit() else None
    if total is not None and total > limit:
        raise UploadTooLarge(size=total, limit=limit)
    hasher = hashlib.sha256()
    size = 0
    with os_errors(dest.name, "TEMP_STORAGE_PATH"), open(dest, "xb") as fh:
        for chunk in resp.iter_bytes(CHUNK):
            size += len(chunk)
            if size > limit:
                raise UploadTooLarge(size=f"over {limit}", limit=limit)
            if should_cancel is not None and should_cancel():
                raise Cancelled()
            hasher.update(chunk)
            fh.write(chunk)
            if progress is not None:
                progress(size, total)
    if total is not None and size != total:
        raise ImportFailed(source=str(resp.url), detail=f"got {size} of {total} bytes")
    return size, hasher.hexdigest()
