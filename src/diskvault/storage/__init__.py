"""Where files live: local directories, S3 buckets, or memory (tests), behind one protocol."""

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
