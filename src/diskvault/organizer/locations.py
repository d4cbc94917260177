"""Where the organizer may work: locations checked against ``ORGANIZER_ROOTS``.

A location is a ``file://`` URL (or an absolute path), or an ``s3://`` URL. It
must lie inside one of the configured roots: a local path after resolving
symlinks, an S3 location in the same bucket and endpoint under the root's prefix.
A location naming ``..`` is refused before anything is resolved.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from diskvault.config import Settings
from diskvault.organizer.errors import BadLocation, LocationNotAllowed
from diskvault.storage import StorageProvider, provider_from_url, redact_url
from diskvault.storage.errors import InvalidStorageUrl

# Folders the organizer writes into a location; scans never look inside them.
TRASH = ".diskvault-trash"
QUARANTINE = ".diskvault-quarantine"
RESERVED = (TRASH, QUARANTINE)


def _parts(path: str) -> list[str]:
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise BadLocation(location=path, detail="'..' components are not accepted")
    return parts


def canonical(location: str) -> str:
    """The location as a normalized URL; raises BadLocation for malformed ones."""
    raw = location.strip()
    if not raw:
        raise BadLocation(location=location, detail="it is empty")
    if "\x00" in raw:
        raise BadLocation(location=redact_url(raw), detail="it contains a NUL byte")
    if raw.startswith("/"):
        raw = "file://" + raw
    parts = urlsplit(raw)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or parts.query:
            raise BadLocation(location=redact_url(raw), detail="use file:///absolute/path")
        segments = _parts(unquote(parts.path))
        return Path("/", *segments).as_uri()
    if scheme == "s3":
        if not parts.netloc:
            raise BadLocation(location=redact_url(raw), detail="no bucket: use s3://bucket/prefix")
        segments = _parts(unquote(parts.path))
        query = urlencode(sorted(parse_qsl(parts.query, keep_blank_values=True)))
        prefix = "/".join(segments)
        return f"s3://{parts.netloc}/{prefix}" + (f"?{query}" if query else "")
    raise BadLocation(location=redact_url(raw), detail="use a file:// path or an s3:// URL")


def _inside(location: str, root: str) -> bool:
    loc, base = urlsplit(location), urlsplit(root)
    if loc.scheme != base.scheme:
        return False
    if loc.scheme == "file":
        real, real_root = (
            Path(os.path.realpath(unquote(loc.path))),
            Path(os.path.realpath(unquote(base.path))),
        )
        return real.is_relative_to(real_root)
    if (loc.netloc, loc.query) != (base.netloc, base.query):
        return False
    mine, theirs = _parts(unquote(loc.path)), _parts(unquote(base.path))
    return mine[: len(theirs)] == theirs


def check_location(settings: Settings, location: str) -> str:
    """The canonical URL of ``location`` if it is inside an allowed root."""
    url = canonical(location)
    roots = [canonical(r) for r in settings.ORGANIZER_ROOTS]
    if url.startswith("file://"):
        # Symlinks resolved: a link inside a root pointing elsewhere is outside.
        url = Path(os.path.realpath(unquote(urlsplit(url).path))).as_uri()
    if not any(_inside(url, root) for root in roots):
        shown = ", ".join(redact_url(r) for r in roots) or "none configured"
        raise LocationNotAllowed(location=redact_url(url), roots=shown)
    return url


def open_location(settings: Settings, url: str) -> StorageProvider:
    """The provider for an already checked (or recorded) location URL."""
    try:
        return provider_from_url(url, settings=settings)
    except InvalidStorageUrl as exc:
        raise BadLocation(location=redact_url(url), detail=exc.message) from exc


class Providers:
    """Providers by URL, built once per operation run."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._cache: dict[str, StorageProvider] = {}

    def __call__(self, url: str) -> StorageProvider:
        if url not in self._cache:
            self._cache[url] = open_location(self.settings, url)
        return self._cache[url]


def is_reserved(key: str) -> bool:
    return key.split("/", 1)[0] in RESERVED
