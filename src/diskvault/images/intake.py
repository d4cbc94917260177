"""Uploads from the first header to a started job: admission, the streamed body, and
what happens once its bytes have landed (check the form fields, record, process).

The API's endpoint parses the request and calls :func:`receive_upload`; nothing of
the upload's order of steps lives there.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import anyio

from diskvault.config import Settings
from diskvault.db.engine import session_scope
from diskvault.errors import DiskvaultError
from diskvault.images import admission, service, sparse, staging, upload
from diskvault.images.errors import InsufficientSpace, InvalidUpload, UnsafeImage, UploadTooLarge
from diskvault.images.models import Image, ImageType
from diskvault.images.service import get, start_processing
from diskvault.images.staging import reject, staged_path


def accept_upload(
    settings: Settings,
    image_id: str,
    partial: Path,
    *,
    fields: dict[str, str],
    filename: str | None,
    size: int,
    sha256: str | None,
    digest: str | None,
    verified: str | None = None,
) -> Image:
    """The bytes have landed: validate the form, inspect the headers, start processing.

    Raises :class:`UnsafeImage` (422) with the image left in ERROR and the bytes deleted.
    """
    staged = staged_path(settings, image_id)
    os.replace(partial, staged)
    try:
        image_type = ImageType(fields.get("image_type") or ImageType.system.value)
    except ValueError:
        err = InvalidUpload(f"image_type {fields.get('image_type')!r} is not system, game or data")
        reject(settings, image_id, err, reason="invalid-field")
        raise err from None
    target = fields.get("target_format") or None
    if target not in (None, "raw", "qcow2"):
        err = InvalidUpload(f"target_format {target!r} is not raw or qcow2")
        reject(settings, image_id, err, reason="invalid-field")
        raise err
    with session_scope(settings.DATABASE_URL) as s:
        image = get(s, image_id)
        image.name = (fields.get("name") or image.name or filename or "upload")[:200]
        image.image_type = image_type
        image.target_format = target or image.target_format
        image.source_sha256 = sha256
        image.file_size = size
        claimed = fields.get("format") or image.details.get("claimed_format")
        image.details = {
            **image.details,
            "claimed_format": claimed,
            "filename": filename,
            "source_digest": digest,
            "client_checksum": verified,  # which checksum of the client's was verified
        }
    return start_processing(settings, image_id, claimed)


async def receive_upload(
    settings: Settings,
    owner: str,
    body: AsyncIterator[bytes],
    *,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    defaults: dict[str, str],
) -> Image:
    """Stream an upload (multipart, or diskvault's sparse stream) to TEMP_STORAGE_PATH with
    its checksum, inspecting headers at once; then verify and start processing.

    An unsafe image, or one whose checksum differs from the client's, raises (its
    bytes deleted, the image left in ERROR); a safe one comes back with its job.
    """
    limit = staging.max_file_bytes(settings)
    length = headers.get("content-length", "")
    if length.isdigit():
        if int(length) > limit + upload.MAX_FIELDS_BYTES:
            raise UploadTooLarge(size=int(length), limit=limit)
        free = shutil.disk_usage(settings.temp_dir).free
        if int(length) > free:
            raise InsufficientSpace(
                path=str(settings.temp_dir), needed=int(length), free=free, action="this upload"
            )
    content_type = headers.get("content-type", "")
    is_sparse = content_type.split(";")[0].strip().lower() == sparse.CONTENT_TYPE
    if not is_sparse:
        upload.boundary_of(content_type)
    expected = admission.Expected.parse(headers, query)
    expected.refuse_unverifiable(sparse=is_sparse)
    await anyio.to_thread.run_sync(_check_jobs, settings, owner)
    with admission.upload_slot(settings, owner):
        image = await anyio.to_thread.run_sync(
            _new_upload, settings, defaults.get("name") or "", owner, defaults
        )
        partial = staging.partial_path(settings, image.id)
        stream = upload.idle_limited(body, settings.UPLOAD_IDLE_TIMEOUT_S)
        try:
            if is_sparse:
                received = await upload.receive_sparse(stream, partial, limit=limit)
            else:
                received = await upload.receive(stream, content_type, partial, limit=limit)
                expected = admission.Expected.parse(headers, query, received.fields)
                expected.refuse_unverifiable(sparse=False)
            expected.verify(received.sha256, received.digest)
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_upload_failed, settings, image.id, exc)
            if isinstance(exc, UnsafeImage):
                exc.fields["image_id"] = image.id
            raise
    accept = functools.partial(
        accept_upload,
        settings,
        image.id,
        partial,
        fields={**defaults, **received.fields},
        filename=received.filename,
        size=received.size,
        sha256=received.sha256,
        digest=received.digest,
        verified=expected.kind,
    )
    return await anyio.to_thread.run_sync(accept)


def _check_jobs(settings: Settings, user: str) -> None:
    with session_scope(settings.DATABASE_URL) as s:
        admission.check_jobs(s, settings, user)


def _new_upload(settings: Settings, name: str, owner: str, fields: dict[str, str]) -> Image:
    with session_scope(settings.DATABASE_URL) as s:
        image = service.create(
            s,
            settings,
            name=name,
            owner=owner,
            source="upload",
            claimed_format=fields.get("format"),
        )
        s.expunge(image)
        return image


def _upload_failed(settings: Settings, image_id: str, exc: BaseException) -> None:
    if isinstance(exc, UnsafeImage):
        reject(settings, image_id, exc)
    elif isinstance(exc, DiskvaultError):
        reject(
            settings,
            image_id,
            RuntimeError(f"upload failed: {exc.message}"),
            reason="upload-failed",
        )
    else:
        message = "the upload was interrupted before all bytes arrived; upload again"
        reject(settings, image_id, RuntimeError(message), reason="upload-failed")
    staging.partial_path(settings, image_id).unlink(missing_ok=True)
