"""Images: list, upload (the JS posts to the upload API), detail, convert, resize, delete."""

from __future__ import annotations

from fastapi import APIRouter, Path, Query, Request, Response

from diskvault.api.deps import DbDep, SettingsDep
from diskvault.boot import service as boot_service
from diskvault.boot import versions
from diskvault.db.engine import session_scope
from diskvault.db.pagination import PageParams
from diskvault.images import download, service
from diskvault.images.models import ImageStatus, ImageType
from diskvault.images.schemas import ConvertRequest, ResizeRequest
from diskvault.images.store import ImageStore
from diskvault.jobs import service as jobs
from diskvault.targets import service as targets
from diskvault.web import svg
from diskvault.web.pages.common import ListDep, checkbox, parse
from diskvault.web.render import redirect, render
from diskvault.web.session import OperatorWriterDep, ReaderDep

router = APIRouter()
FORMATS = ("raw", "qcow2", "vmdk", "vhdx", "vhd", "vdi", "iso")


@router.get("/images")
def list_images(
    request: Request,
    who: ReaderDep,
    db: DbDep,
    lq: ListDep,
    status: ImageStatus | None = Query(None),
    format: str | None = Query(None, max_length=16),
) -> Response:
    sort = lq.sort if lq.sort.lstrip("-") in service.SORTS else "-created"
    items, total = service.list_images(
        db, lq.page, status=status, fmt=format or None, name=lq.q or None, sort=sort
    )
    context = {
        **lq.out(items, total),
        "sort": sort,
        "status": status.value if status else "",
        "format": format or "",
        "statuses": list(ImageStatus),
        "formats": FORMATS,
        "types": list(ImageType),
    }
    return render(request, "images.html", who, context)


@router.get("/images/{image_id}")
def image_detail(
    request: Request, image_id: str, who: ReaderDep, db: DbDep, settings: SettingsDep
) -> Response:
    image = service.get(db, image_id)
    everything = PageParams(limit=200)
    rows = [
        (v, versions.users(db, image.id, v.version))
        for v in versions.list_versions(db, settings, image.id)
    ]
    context = {
        "image": image,
        "job": jobs.get(db, image.job_id) if image.job_id else None,
        "in_use": service.usage(db, image.id),
        "versions": rows,
        "timeline": svg.timeline(rows),
        "targets": targets.list_targets(db, everything, image_id=image.id)[0],
        "machines": boot_service.list_machines(db, everything, image_id=image.id)[0],
        "convert_formats": ("raw", "qcow2", "vmdk", "vhdx"),
    }
    return render(request, "image_detail.html", who, context)


@router.get("/images/{image_id}/download")
def download_image(
    image_id: str, request: Request, _: ReaderDep, settings: SettingsDep
) -> Response:
    with session_scope(settings.DATABASE_URL) as s:
        image = service.get(s, image_id)
        s.expunge(image)
    return download.response(ImageStore(settings), image, request.headers.get("range"))


@router.post("/images/{image_id}/convert")
def convert_image(
    image_id: str, who: OperatorWriterDep, db: DbDep, settings: SettingsDep
) -> Response:
    body = parse(ConvertRequest, who.form, compress=checkbox(who.form, "compress"))
    service.request_convert(
        db,
        settings,
        image_id,
        body.target_format,
        compress=body.compress,
        owner=who.principal.username,
    )
    return redirect(f"/images/{image_id}", ("info", f"Converting to {body.target_format}."))


@router.post("/images/{image_id}/resize")
def resize_image(
    image_id: str, who: OperatorWriterDep, db: DbDep, settings: SettingsDep
) -> Response:
    size = who.form.get("size_gib", "")
    try:
        size_bytes = round(float(size) * 1024**3 / 512) * 512
    except ValueError:
        size_bytes = 0
    body = parse(ResizeRequest, {}, size=size_bytes, force=checkbox(who.form, "force"))
    service.request_resize(
        db, settings, image_id, body.size, force=body.force, owner=who.principal.username
    )
    return redirect(f"/images/{image_id}", ("info", f"Resizing to {size} GiB."))


@router.post("/images/{image_id}/delete")
def delete_image(
    image_id: str, who: OperatorWriterDep, db: DbDep, settings: SettingsDep
) -> Response:
    name = service.get(db, image_id).name
    service.delete(db, settings, image_id)
    return redirect("/images", ("info", f"Deleted image {name}."))


@router.post("/images/{image_id}/versions/{version}/rollback")
def rollback_version(
    image_id: str, who: OperatorWriterDep, db: DbDep, version: int = Path(ge=1, le=10**6)
) -> Response:
    versions.rollback(db, image_id, version)
    return redirect(f"/images/{image_id}", ("info", f"Version {version} is current now."))
