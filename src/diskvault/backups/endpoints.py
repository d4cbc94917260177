from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, status
from fastapi.responses import JSONResponse

from diskvault.api.deps import AdminDep, DbDep, OperatorDep, PrincipalDep, SettingsDep
from diskvault.api.pagination import Page, PageParams, page_params
from diskvault.api.responses import problems
from diskvault.backups import errors, keys, policies, registration, repositories, retention, service
from diskvault.backups.errors import NotSupportedHere
from diskvault.backups.models import BackupStatus
from diskvault.backups.preview import owner_of
from diskvault.backups.schemas import (
    BackupOut,
    BackupStart,
    ChainsOut,
    CopyRequest,
    PolicyCreate,
    PolicyHistoryEntry,
    PolicyOut,
    PolicyPreview,
    PolicySaved,
    PolicyUpdate,
    PruneRequest,
    RekeyRequest,
    RepositoryCreate,
    RepositoryOut,
    RepositoryUpdate,
    RescanOut,
    RestoreRequest,
    SourceCreate,
    SourceOut,
)
from diskvault.db import pagination
from diskvault.db.engine import session_scope
from diskvault.jobs.schemas import JobOut
from diskvault.storage import errors as storage_errors

router = APIRouter(prefix="/api/v1", tags=["backups"], responses=problems(errors, storage_errors))
PageDep = Annotated[PageParams, Depends(page_params)]
ACCEPTED = status.HTTP_202_ACCEPTED


# -- sources ------------------------------------------------------------------


@router.post("/sources", response_model=SourceOut, status_code=201, summary="Register a source")
def create_source(body: SourceCreate, _: AdminDep, db: DbDep) -> Any:
    """Each kind takes its own fields (see the request schemas); its disks must exist
    and be readable now, unless ``unverified`` says they cannot be checked yet."""
    return registration.add_source(db, body)


@router.get("/sources", response_model=Page[SourceOut])
def list_sources(_: PrincipalDep, db: DbDep, page: PageDep) -> Any:
    return pagination.page(*service.list_sources(db, page), page)


@router.get("/sources/{name}", response_model=SourceOut)
def get_source(name: str, _: PrincipalDep, db: DbDep) -> Any:
    return service.get_source(db, name)


@router.delete("/sources/{name}", response_model=SourceOut, summary="Forget a source")
def delete_source(name: str, _: AdminDep, db: DbDep) -> Any:
    return service.delete_source(db, name)


# -- repositories ----------------------------------------------------------------


@router.post("/repositories", response_model=RepositoryOut, status_code=201)
def create_repository(body: RepositoryCreate, _: AdminDep, db: DbDep, settings: SettingsDep) -> Any:
    """Add a repository; ``attach: true`` also rebuilds chains from its sidecars."""
    repo, paper = registration.add_repository(db, settings, body)
    return RepositoryOut.model_validate(repo).model_copy(update={"paper_key": paper})


@router.patch(
    "/repositories/{ref}",
    response_model=RepositoryOut,
    responses={409: {"description": "encryption change of a repository with points"}},
)
def update_repository(
    ref: str, body: RepositoryUpdate, _: AdminDep, db: DbDep, settings: SettingsDep
) -> Any:
    """Compression applies to new points; encryption only changes while it is empty."""
    repo = repositories.get_repository(db, settings, ref)
    repo = keys.update_repository(db, settings, repo, body.model_dump(exclude_unset=True))
    paper = getattr(repo, "paper_key", None)
    return RepositoryOut.model_validate(repo).model_copy(update={"paper_key": paper})


@router.post(
    "/repositories/{ref}/rekey",
    response_model=RepositoryOut,
    summary="New key for new chains (400 when not encrypted, 422 for a bad key file)",
)
def rekey(ref: str, body: RekeyRequest, _: AdminDep, db: DbDep, settings: SettingsDep) -> Any:
    """New chains under a new key; older points stay readable with the old one."""
    repo = repositories.get_repository(db, settings, ref)
    repo = keys.rekey(db, settings, repo, body.key_file, body.create_key)
    paper = getattr(repo, "paper_key", None)
    return RepositoryOut.model_validate(repo).model_copy(update={"paper_key": paper})


@router.get("/repositories", response_model=Page[RepositoryOut])
def list_repositories(_: PrincipalDep, db: DbDep, page: PageDep) -> Any:
    return pagination.page(*repositories.list_repositories(db, page), page)


@router.get("/repositories/{ref}", response_model=RepositoryOut)
def get_repository(ref: str, _: PrincipalDep, db: DbDep, settings: SettingsDep) -> Any:
    return repositories.refresh_usage(db, repositories.get_repository(db, settings, ref))


@router.post("/repositories/{ref}/rescan", response_model=RescanOut)
def rescan(ref: str, _: AdminDep, db: DbDep, settings: SettingsDep) -> Any:
    """Rebuild restore points and chains from the sidecars on disk."""
    return repositories.rescan(db, repositories.get_repository(db, settings, ref))


# -- backups ------------------------------------------------------------------------


@router.post("/backup/start", response_model=JobOut, status_code=ACCEPTED)
def start(body: BackupStart, who: OperatorDep, db: DbDep, settings: SettingsDep) -> Any:
    job = service.start(
        db,
        settings,
        vm_name=body.vm_name,
        backup_type=body.backup_type,
        repository=body.repository,
        owner=who.username,
        speed=body.speed,
    )
    return job


@router.get("/backup/list", response_model=Page[BackupOut])
def list_backups(
    _: PrincipalDep,
    db: DbDep,
    settings: SettingsDep,
    page: PageDep,
    vm_name: str | None = Query(None),
    repository: str | None = Query(None, description="name or id"),
    status_: BackupStatus | None = Query(None, alias="status"),
) -> Any:
    repo_id = repositories.get_repository(db, settings, repository).id if repository else None
    items, total = service.list_backups(
        db, page, vm_name=vm_name, repository_id=repo_id, status=status_
    )
    return pagination.page(items, total, page)


@router.get("/backup/chain", response_model=ChainsOut, summary="Restore points per chain")
def chain(
    _: PrincipalDep,
    db: DbDep,
    settings: SettingsDep,
    vm_name: str = Query(...),
    repository: str | None = Query(None),
) -> Any:
    repo_id = repositories.get_repository(db, settings, repository).id if repository else None
    return service.chain_view(db, vm_name, repo_id)


@router.post(
    "/backup/prune",
    summary="Prune, or simulate with dry_run (the default)",
    responses={
        200: {"description": "dry_run (the default): what each disk's prune would keep"},
        202: {"model": JobOut, "description": "dry_run false: the prune job"},
    },
)
def prune(body: PruneRequest, who: OperatorDep, db: DbDep, settings: SettingsDep) -> Any:
    repo = repositories.local_repository(db, settings, body.repository)
    rules = body.model_dump(include=set(retention.RULES))
    max_length = body.max_chain_length
    owner = None
    if body.policy:
        policy = policies.get(db, body.policy)
        rules, max_length = dict(policy.retention), max_length or policy.max_chain_length
        owner = owner_of(policy)
    if body.dry_run:
        disks = retention.simulate(
            db, settings, repository_id=repo.id, vm=body.vm_name, rules=rules, owner=owner
        )
        return {"dry_run": True, "disks": disks}
    params = {
        "vm_name": body.vm_name,
        "repository_id": repo.id,
        "rules": rules,
        "max_chain_length": max_length,
        "owner": owner,
    }
    job = service.submit(settings, "backup-prune", params, who.username)
    return JSONResponse(JobOut.model_validate(job).model_dump(mode="json"), status_code=ACCEPTED)


@router.post("/backup/copy", response_model=JobOut, status_code=ACCEPTED)
def copy(body: CopyRequest, who: OperatorDep, db: DbDep, settings: SettingsDep) -> Any:
    """Copy restore points to another repository (local or s3), skipping those there."""
    source = repositories.local_repository(db, settings, body.repository)
    target = repositories.get_repository(db, settings, body.target)
    if target.id == source.id:
        raise NotSupportedHere(f"repository {target.name} cannot be copied onto itself")
    params = {
        "repository_id": source.id,
        "target_repository_id": target.id,
        "vm_name": body.vm_name,
    }
    return service.submit(settings, "backup-copy", params, who.username)


@router.get("/backup/{backup_id}", response_model=BackupOut)
def get_backup(backup_id: str, _: PrincipalDep, db: DbDep) -> Any:
    return service.get_backup(db, backup_id)


@router.delete("/backup/{backup_id}", response_model=JobOut, status_code=ACCEPTED)
def delete_backup(backup_id: str, who: OperatorDep, db: DbDep, settings: SettingsDep) -> Any:
    """Delete a restore point; one in the middle is merged into its child first."""
    return service.request_delete(db, settings, backup_id, who.username)


@router.post("/backup/{backup_id}/verify", response_model=JobOut, status_code=ACCEPTED)
def verify(backup_id: str, who: OperatorDep, db: DbDep, settings: SettingsDep) -> Any:
    service.completed(db, backup_id, "verified")
    return service.submit(settings, "backup-verify", {"backup_id": backup_id}, who.username)


@router.post("/backup/{backup_id}/restore", response_model=JobOut, status_code=ACCEPTED)
def restore(
    backup_id: str, body: RestoreRequest, who: OperatorDep, db: DbDep, settings: SettingsDep
) -> Any:
    """Restore the whole disk to a new file, an NBD export or the image library."""
    return service.request_restore(db, settings, backup_id, body.model_dump(), who.username)


# -- policies ------------------------------------------------------------------------


def _saved(row: Any, shown: dict[str, Any]) -> dict[str, Any]:
    return {**PolicyOut.model_validate(row).model_dump(), "preview": shown}


@router.post("/policies", response_model=PolicySaved, status_code=201)
def create_policy(body: PolicyCreate, _: OperatorDep, db: DbDep, settings: SettingsDep) -> Any:
    """Add a policy; ``preview`` says what its next run would keep, remove and merge."""
    return _saved(*policies.create(db, settings, body.model_dump()))


@router.post("/policies/preview", response_model=PolicyPreview, summary="Preview a new policy")
def preview_new_policy(
    body: PolicyCreate, _: PrincipalDep, db: DbDep, settings: SettingsDep
) -> Any:
    """What a policy made from this body would do on its next run; nothing is saved."""
    return policies.preview(db, settings, body.model_dump())


@router.patch("/policies/{ref}", response_model=PolicySaved, summary="Change a policy")
def update_policy(
    ref: str, body: PolicyUpdate, _: OperatorDep, db: DbDep, settings: SettingsDep
) -> Any:
    """Change the fields given; ``preview`` is the next run under the new rules."""
    return _saved(*policies.update(db, settings, ref, body.model_dump(exclude_unset=True)))


@router.post("/policies/{ref}/preview", response_model=PolicyPreview)
def preview_policy(
    ref: str, body: PolicyUpdate, _: PrincipalDep, db: DbDep, settings: SettingsDep
) -> Any:
    """The policy's next run, with the changes in the body applied (``{}``: as it is)."""
    return policies.preview(db, settings, body.model_dump(exclude_unset=True), ref)


@router.get("/policies/{ref}/history", response_model=list[PolicyHistoryEntry])
def policy_history(ref: str, _: PrincipalDep, db: DbDep) -> Any:
    """The previews shown when the policy was created and each time it changed."""
    return policies.get(db, ref).history or []


@router.get("/policies", response_model=Page[PolicyOut])
def list_policies(_: PrincipalDep, db: DbDep, page: PageDep) -> Any:
    return pagination.page(*policies.list_policies(db, page), page)


@router.get("/policies/{ref}", response_model=PolicyOut)
def get_policy(ref: str, _: PrincipalDep, db: DbDep) -> Any:
    return policies.get(db, ref)


@router.delete("/policies/{ref}", response_model=PolicyOut)
def delete_policy(ref: str, _: OperatorDep, db: DbDep) -> Any:
    return policies.delete(db, ref)


@router.post("/policies/{ref}/run", status_code=ACCEPTED, summary="Run a policy now")
def run_policy(ref: str, who: OperatorDep, db: DbDep, settings: SettingsDep) -> Any:
    return {"job_ids": policies.run_now(db, settings, policies.get(db, ref), who.username)}


def startup(app: FastAPI) -> None:
    """Make the default repository here, so reading it never creates it."""
    settings = app.state.settings
    with session_scope(settings.DATABASE_URL) as s:
        repositories.ensure_default_repository(s, settings)
