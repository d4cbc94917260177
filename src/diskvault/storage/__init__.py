"""Where files live: local directories, S3 buckets, or memory (tests), behind one protocol.

Names load from their submodules on first use: boto3 alone takes a quarter of a
second to import, and most importers (``diskvault.storage.base`` for a helper,
the image CLI's offline convert) never touch S3.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_SUBMODULE = {
    "Page": "base",
    "ProgressCallback": "base",
    "StorageFile": "base",
    "StorageProvider": "base",
    "DestinationExists": "errors",
    "InvalidKey": "errors",
    "InvalidStorageUrl": "errors",
    "ObjectNotFound": "errors",
    "SizeMismatch": "errors",
    "StorageAccessDenied": "errors",
    "StorageError": "errors",
    "StorageFull": "errors",
    "StorageUnavailable": "errors",
    "PROVIDERS": "factory",
    "provider_from_url": "factory",
    "redact_url": "factory",
    "LocalStorageProvider": "local",
    "MemoryStorageProvider": "memory",
    "S3StorageProvider": "s3",
}
__all__ = [
    "PROVIDERS",
    "DestinationExists",
    "InvalidKey",
    "InvalidStorageUrl",
    "LocalStorageProvider",
    "MemoryStorageProvider",
    "ObjectNotFound",
    "Page",
    "ProgressCallback",
    "S3StorageProvider",
    "SizeMismatch",
    "StorageAccessDenied",
    "StorageError",
    "StorageFile",
    "StorageFull",
    "StorageProvider",
    "StorageUnavailable",
    "provider_from_url",
    "redact_url",
]


def __getattr__(name: str) -> Any:
    submodule = _SUBMODULE.get(name)
    if submodule is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{submodule}"), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from diskvault.storage.base import Page, ProgressCallback, StorageFile, StorageProvider
    from diskvault.storage.errors import (
        DestinationExists,
        InvalidKey,
        InvalidStorageUrl,
        ObjectNotFound,
        SizeMismatch,
        StorageAccessDenied,
        StorageError,
        StorageFull,
        StorageUnavailable,
    )
    from diskvault.storage.factory import PROVIDERS, provider_from_url, redact_url
    from diskvault.storage.local import LocalStorageProvider
    from diskvault.storage.memory import MemoryStorageProvider
    from diskvault.storage.s3 import S3StorageProvider
