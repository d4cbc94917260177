"""Storage errors. ``storage`` fields always hold a redacted URL, never credentials."""

from __future__ import annotations

from diskvault.errors import (
    BadRequest,
    Conflict,
    DiskvaultError,
    Forbidden,
    InsufficientStorage,
    NotFound,
    ServiceUnavailable,
)


class StorageError(DiskvaultError):
    template = "storage operation failed: {detail}"
    title = "Storage error"


class InvalidKey(BadRequest, StorageError):
    template = (
        "invalid storage key {key!r}: {detail}; use a relative path with '/' separators "
        "that stays inside the storage root"
    )
    title = "Invalid storage key"


class InvalidStorageUrl(BadRequest, StorageError):
    template = "invalid storage URL {url}: {detail}"
    title = "Invalid storage URL"


class ObjectNotFound(NotFound, StorageError):
    template = "{key} was not found in {storage}; check the name or list the storage to find it"
    title = "Object not found"


class DestinationExists(Conflict, StorageError):
    template = (
        "{key} already exists in {storage}; choose another name, or delete or replace "
        "it explicitly (overwrite=True)"
    )
    title = "Destination exists"


class SizeMismatch(BadRequest, StorageError):
    template = (
        "{key}: expected {expected} bytes but the source gave {actual}; nothing was stored, "
        "retry with the complete source"
    )
    title = "Size mismatch"


class StorageAccessDenied(Forbidden, StorageError):
    template = (
        "access to {key} in {storage} was denied ({detail}); check file permissions, "
        "credentials or the bucket policy"
    )
    title = "Storage access denied"


class StorageFull(InsufficientStorage, StorageError):
    template = (
        "no space left in {storage} while writing {key}; nothing was stored, free space "
        "or use another storage location"
    )
    title = "Storage full"


class StorageUnavailable(ServiceUnavailable, StorageError):
    template = "{storage} is unreachable ({detail}); check the endpoint and network, then retry"
    title = "Storage unavailable"
