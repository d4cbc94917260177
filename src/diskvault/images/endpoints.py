from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response, status

from diskvault.api.deps import DbDep, OperatorDep, PrincipalDep, SettingsDep
from diskvault.api.pagination import Page, PageParams, page_params
from diskvault.api.problems import problem_response
from diskvault.api.responses import problems
from diskvault.db import pagination
from diskvault.db.engine import session_scope
from diskvault.images import admission, download, errors, importer, intake, service
from diskvault.images.errors import (
    RangeNotSatisfiable,
)
from diskvault.images.models import ImageStatus, ImageType
from diskvault.images.schemas import (
    AutoTarget,
    ConversionStatus,
    ConvertRequest,
    ImageImport,
    ImageOut,
    ResizeRequest,
)
from diskvault.images.store import ImageStore
from diskvault.storage import errors as storage_errors

router = APIRouter(
    prefix="/api/v1/images", tags=["images"], responses=problems(errors, storage_errors)
)
PageDep = Annotated[PageParams, Depends(page_params)]


# Operators and admins; checked by api.guard before a byte of the upload is read.
UploadPrincipalDep = OperatorDep


@router.post(
    "/upload",
    response_model=ImageOut,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Upload an image (multipart: file, name, image_type[, format, target_format]; "
    "or a sparse stream with the fields as query parameters)",
)
async def upload_image(
    request: Request,
    settings: SettingsDep,
    principal: UploadPrincipalDep,
    name: str | None = Query(None, max_length=200, description="or the 'name' form field"),
    image_type: ImageType | None = Query(None, description="or the 'image_type' form field"),
    format: str | None = Query(None, max_length=16, description="declared format (checked)"),
    target_format: AutoTarget | None = Query(None, description="automatic conversion target"),
    # Read with the headers by admission.Expected; declared here for the contract.
    checksum_sha256: str | None = Query(
        None, max_length=128, description="or X-Checksum-Sha256 (multipart): 64 hex digits"
    ),
    checksum_sha256_extents: str | None = Query(
        None,
        max_length=128,
        description="or X-Checksum-Sha256-Extents (sparse stream, docs/images.md)",
    ),
) -> Any:
    """The body streams to TEMP_STORAGE_PATH with its checksum; headers are inspected at once.

    An unsafe image, or one whose checksum differs from the client's
    (``X-Checksum-Sha256``, or ``X-Checksum-Sha256-Extents`` for the sparse
    stream), is answered 422 (its bytes deleted); a safe one is 202 and verified
    and converted by a job (see ``job_id`` and ``/conversion-status``).
    """
    defaults = {
        key: value
        for key, value in {
            "name": name,
            "image_type": image_type,
            "format": format,
            "target_format": target_format,
        }.items()
        if value
    }
    return await intake.receive_upload(
        settings,
        principal.username,
        request.stream(),
        headers=request.headers,
        query=request.query_params,
        defaults=defaults,
    )


@router.post(
    "/import",
    response_model=ImageOut,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Import from a server path (inside IMPORT_ROOTS) or an http(s) URL",
)
def import_image(
    body: ImageImport, principal: PrincipalDep, settings: SettingsDep, db: DbDep
) -> Any:
    admission.check_jobs(db, settings, principal.username)
    return importer.request_import(db, settings, body, owner=principal.username)


@router.get("", response_model=Page[ImageOut])
def list_images(
    _: PrincipalDep,
    db: DbDep,
    page: PageDep,
    status_: ImageStatus | None = Query(None, alias="status"),
    format: str | None = Query(None, max_length=16),
    image_type: ImageType | None = Query(None),
) -> Any:
    items, total = service.list_images(db, page, status=status_, fmt=format, image_type=image_type)
    return pagination.page(items, total, page)


@router.get("/{image_id}", response_model=ImageOut)
def get_image(image_id: str, _: PrincipalDep, db: DbDep) -> Any:
    return service.get(db, image_id)


@router.post(
    "/{image_id}/convert",
    response_model=ImageOut,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Convert to raw, qcow2, vmdk or vhdx in a background job",
)
def convert_image(
    image_id: str, body: ConvertRequest, principal: PrincipalDep, settings: SettingsDep, db: DbDep
) -> Any:
    admission.check_jobs(db, settings, principal.username)
    return service.request_convert(
        db,
        settings,
        image_id,
        body.target_format,
        compress=body.compress,
        owner=principal.username,
    )


@router.get("/{image_id}/conversion-status", response_model=ConversionStatus)
def conversion_status(image_id: str, _: PrincipalDep, db: DbDep) -> Any:
    return service.conversion_status(db, image_id)


@router.post(
    "/{image_id}/resize",
    response_model=ImageOut,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Grow (or, with force and when the data fits, shrink) the virtual size",
)
def resize_image(
    image_id: str, body: ResizeRequest, principal: PrincipalDep, settings: SettingsDep, db: DbDep
) -> Any:
    admission.check_jobs(db, settings, principal.username)
    return service.request_resize(
        db, settings, image_id, body.size, force=body.force, owner=principal.username
    )


@router.get(
    "/{image_id}/download",
    response_class=Response,
    summary="Download the image file; a single HTTP Range is honoured (206)",
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "the file"},
        206: {"content": {"application/octet-stream": {}}, "description": "the Range asked"},
    },
)
def download_image(
    image_id: str, request: Request, _: PrincipalDep, settings: SettingsDep
) -> Response:
    # A short session of its own: the dependency's would stay open while the body streams.
    with session_scope(settings.DATABASE_URL) as s:
        image = service.get(s, image_id)
        s.expunge(image)
    store = ImageStore(settings)
    try:
        return download.response(store, image, request.headers.get("range"))
    except RangeNotSatisfiable as exc:
        body = exc.problem()
        body["instance"] = request.url.path
        size = exc.fields.get("size", 0)
        return problem_response(body, headers={"Content-Range": f"bytes */{size}"})


@router.delete(
    "/{image_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete an image (409 while a target, machine or backup uses it)",
)
def delete_image(image_id: str, _: PrincipalDep, settings: SettingsDep, db: DbDep) -> Response:
    service.delete(db, settings, image_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
