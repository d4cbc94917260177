"""Build a provider from a storage URL, and make URLs safe to log.

Supported: ``file:///srv/images``, ``s3://bucket/prefix?endpoint_url=...&region=...``
and ``memory://name``. S3 credentials never come from the URL (URLs end up in the
DB, logs and job records): they come from ``settings``, ``DISKVAULT_S3_*`` env
vars, or boto3's default chain (``AWS_*`` env vars, profiles, instance roles).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from diskvault.storage.base import StorageProvider
from diskvault.storage.errors import InvalidStorageUrl
from diskvault.storage.local import LocalStorageProvider
from diskvault.storage.memory import MemoryStorageProvider
from diskvault.storage.s3 import S3StorageProvider

PROVIDERS: dict[str, type[StorageProvider]] = {
    "file": LocalStorageProvider,
    "s3": S3StorageProvider,
    "memory": MemoryStorageProvider,
}

S3_OPTIONS = {"endpoint_url", "region"}
SECRET_PARAMS = {
    "access_key",
    "access_key_id",
    "aws_access_key_id",
    "secret",
    "secret_key",
    "secret_access_key",
    "aws_secret_access_key",
    "session_token",
    "aws_session_token",
    "token",
    "password",
    "x-amz-credential",
    "x-amz-signature",
    "x-amz-security-token",
    "signature",
}


def redact_url(url: str) -> str:
    """``url`` without user:password and without secret query parameters."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not _secret(k)]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query), parts.fragment))


def _secret(param: str) -> bool:
    return param.lower() in SECRET_PARAMS


def provider_from_url(url: str, *, settings: Any = None) -> StorageProvider:
    """The provider for ``url``; ``settings`` may carry S3_ACCESS_KEY_ID/S3_SECRET_ACCESS_KEY."""
    parts = urlsplit(url)
    safe = redact_url(url)
    if parts.username is not None or parts.password is not None:
        raise InvalidStorageUrl(
            url=safe,
            detail="credentials in URLs are refused; set DISKVAULT_S3_ACCESS_KEY_ID and "
            "DISKVAULT_S3_SECRET_ACCESS_KEY instead",
        )
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    if any(_secret(k) for k in query):
        raise InvalidStorageUrl(
            url=safe,
            detail="secrets in URL parameters are refused; set DISKVAULT_S3_ACCESS_KEY_ID "
            "and DISKVAULT_S3_SECRET_ACCESS_KEY instead",
        )
    scheme = parts.scheme.lower()
    if scheme == "file":
        return _local(parts.netloc, unquote(parts.path), query, safe)
    if scheme == "s3":
        return _s3(parts.netloc, unquote(parts.path), query, safe, settings)
    if scheme == "memory":
        return MemoryStorageProvider(parts.netloc + parts.path)
    raise InvalidStorageUrl(
        url=safe, detail=f"unknown scheme {scheme!r}; use one of {', '.join(sorted(PROVIDERS))}"
    )


def _local(host: str, path: str, query: dict[str, str], safe: str) -> LocalStorageProvider:
    if host not in ("", "localhost"):
        raise InvalidStorageUrl(url=safe, detail="file URLs name a local path: file:///srv/images")
    if query:
        raise InvalidStorageUrl(url=safe, detail="file URLs take no parameters")
    if not path.startswith("/"):
        raise InvalidStorageUrl(url=safe, detail="the path must be absolute: file:///srv/images")
    return LocalStorageProvider(Path(path))


def _s3(
    bucket: str, path: str, query: dict[str, str], safe: str, settings: Any
) -> S3StorageProvider:
    if not bucket:
        raise InvalidStorageUrl(url=safe, detail="no bucket: use s3://bucket/prefix")
    unknown = sorted(set(query) - S3_OPTIONS)
    if unknown:
        raise InvalidStorageUrl(
            url=safe,
            detail=f"unknown parameter(s) {', '.join(unknown)}; known: "
            f"{', '.join(sorted(S3_OPTIONS))}",
        )
    return S3StorageProvider(
        bucket,
        path.strip("/"),
        endpoint_url=query.get("endpoint_url") or None,
        region=query.get("region") or None,
        access_key=_setting(settings, "S3_ACCESS_KEY_ID"),
        secret_key=_setting(settings, "S3_SECRET_ACCESS_KEY"),
    )


def _setting(settings: Any, name: str) -> str | None:
    value = getattr(settings, name, None) if settings is not None else None
    if value is None:
        value = os.environ.get(f"DISKVAULT_{name}")
    if value is not None and hasattr(value, "get_secret_value"):
        value = value.get_secret_value()  # pydantic SecretStr
    return value or None
