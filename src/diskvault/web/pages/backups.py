"""Backups: sources and repositories, chain pictures, start, verify, delete, prune simulator."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import ValidationError

from diskvault.api.deps import DbDep, SettingsDep
from diskvault.backups import policies, registration, repositories, retention, service
from diskvault.backups.schemas import (
    BackupStart,
    PolicyCreate,
    RepositoryCreate,
    RestoreRequest,
    Retention,
)
from diskvault.db.pagination import PageParams
from diskvault.web import overview, svg
from diskvault.web.pages.common import InvalidForm, ListDep, checkbox, form_errors, parse
from diskvault.web.render import back_to, redirect, render
from diskvault.web.session import AdminWriterDep, OperatorWriterDep, ReaderDep

router = APIRouter()
ALL = PageParams(limit=1000)


@router.get("/backups")
def backups(request: Request, who: ReaderDep, db: DbDep, lq: ListDep) -> Response:
    sources, total = service.list_sources(db, lq.page, lq.listing())
    repos, _ = repositories.list_repositories(db, ALL)
    context = {
        **lq.sorted_out(sources, total, service.SOURCE_SORTS, "name"),
        "sources": sources,
        "all_sources": service.list_sources(db, ALL)[0] if who.can_operate else [],
        "stats": overview.source_stats(db),
        "repositories": repos,
        "policies": policies.list_policies(db, ALL)[0],
    }
    return render(request, "backups.html", who, context)


@router.get("/backups/{name}")
def source_detail(
    request: Request, name: str, who: ReaderDep, db: DbDep, settings: SettingsDep, lq: ListDep
) -> Response:
    source = service.get_source(db, name)
    points, total = service.list_backups(db, lq.page, vm_name=source.name, listing=lq.listing())
    mounted = overview.mounted_points(db)
    rules = {k: request.query_params.get(k, "") for k in retention.RULES}
    simulation = None
    if any(rules.values()):
        chosen = parse(Retention, rules).model_dump(exclude_none=True)
        repo = repositories.local_repository(db, settings, request.query_params.get("repository"))
        simulation = retention.simulate(
            db, settings, repository_id=repo.id, vm=source.name, rules=chosen
        )
    context = {
        **lq.sorted_out(points, total, service.POINT_SORTS, "-created"),
        "source": source,
        "chain": svg.chain(service.chain_view(db, source.name, None), mounted),
        "mounted": mounted,
        "children": overview.children_of(db, points),
        "sizes": svg.columns(overview.point_sizes(db, source.name)),
        "rules": rules,
        "simulation": simulation,
        "repositories": repositories.list_repositories(db, ALL)[0],
    }
    return render(request, "backup_source.html", who, context)


@router.post("/backups/sources")
def create_source(who: AdminWriterDep, db: DbDep) -> Response:
    form = who.form
    kind = form.get("kind", "")
    lines = [x.strip() for x in str(form.get("disks", "")).splitlines() if x.strip()]
    fields: dict[str, Any] = {"name": form.get("name", ""), "kind": kind}
    fields |= {k: form[k] for k in ("socket", "domain", "uri") if form.get(k)}
    if lines:
        fields["disks"] = lines
    fields["unverified"] = checkbox(form, "unverified")
    try:
        body = registration.SOURCE_SCHEMA.validate_python(fields)
    except ValidationError as exc:
        raise InvalidForm(form_errors(exc)) from None
    source = registration.add_source(db, body)
    return redirect(f"/backups/{source.name}", ("info", f"Source {source.name} added."))


@router.post("/backups/repositories")
def create_repository(who: AdminWriterDep, db: DbDep, settings: SettingsDep) -> Response:
    form = {**who.form, "create_key": checkbox(who.form, "create_key")}
    form["attach"] = checkbox(who.form, "attach")
    body = parse(RepositoryCreate, form)
    repo, paper = registration.add_repository(db, settings, body)
    text = f"Repository {repo.name} added."
    if paper:
        text += f" Keep this paper key somewhere safe; it is shown once: {paper}"
    return redirect("/backups", ("info", text))


@router.post("/backups/policies")
def create_policy(who: OperatorWriterDep, db: DbDep, settings: SettingsDep) -> Response:
    form = dict(who.form)
    form["sources"] = [s for s in who.form_lists.get("sources", []) if s]
    body = parse(PolicyCreate, form)
    policies.create(db, settings, body.model_dump())
    return redirect("/backups", ("info", f"Policy {body.name} created."))


@router.post("/backups/start")
def start_backup(who: OperatorWriterDep, db: DbDep, settings: SettingsDep) -> Response:
    body = parse(BackupStart, who.form)
    job = service.start(
        db,
        settings,
        vm_name=body.vm_name,
        backup_type=body.backup_type,
        repository=body.repository,
        owner=who.principal.username,
        speed=body.speed,
    )
    return redirect(f"/jobs/{job.id}", ("info", f"Backup of {body.vm_name} started."))


@router.post("/backups/points/{backup_id}/verify")
def verify_point(
    request: Request, backup_id: str, who: OperatorWriterDep, db: DbDep, settings: SettingsDep
) -> Response:
    service.completed(db, backup_id, "verified")
    job = service.submit(
        settings, "backup-verify", {"backup_id": backup_id}, who.principal.username
    )
    return redirect(f"/jobs/{job.id}", ("info", "Verifying the restore point."))


@router.post("/backups/points/{backup_id}/delete")
def delete_point(
    request: Request, backup_id: str, who: OperatorWriterDep, db: DbDep, settings: SettingsDep
) -> Response:
    job = service.request_delete(db, settings, backup_id, who.principal.username)
    return redirect(f"/jobs/{job.id}", ("info", "Deleting the restore point."))


@router.post("/backups/policies/{ref}/run")
def run_policy(
    request: Request, ref: str, who: OperatorWriterDep, db: DbDep, settings: SettingsDep
) -> Response:
    policies.run_now(db, settings, policies.get(db, ref), who.principal.username)
    return redirect(back_to(request, who, "/backups"), ("info", f"Policy {ref} started."))


@router.post("/backups/restore")
def restore_point(who: OperatorWriterDep, db: DbDep, settings: SettingsDep) -> Response:
    form = who.form
    kind = form.get("target", "")
    where = {"file": "path", "nbd": "url", "image": "image_name"}.get(kind)
    fields = {"target": kind, "format": form.get("format", "")}
    if where:
        fields[where] = form.get("destination", "")
    body = parse(RestoreRequest, fields)
    backup_id = form.get("backup_id", "")
    job = service.request_restore(
        db, settings, backup_id, body.model_dump(), who.principal.username
    )
    return redirect(f"/jobs/{job.id}", ("info", f"Restoring to {kind}."))
