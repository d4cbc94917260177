"""Admin: users and roles, API tokens (shown once), the audit log."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from diskvault.api.deps import DbDep
from diskvault.auth import service
from diskvault.auth.schemas import ApiTokenCreate, SignupRequest, UserUpdate
from diskvault.db.pagination import PageParams
from diskvault.web.pages.common import ListDep, parse
from diskvault.web.render import redirect, render
from diskvault.web.session import AdminReaderDep, AdminWriterDep, AnyWriterDep, ReaderDep

router = APIRouter()


@router.get("/admin")
def admin(request: Request, who: AdminReaderDep, db: DbDep, lq: ListDep) -> Response:
    users, _ = service.list_users(db, PageParams(limit=500))
    audit, total = service.list_audit(db, lq.page, lq.listing())
    context = {
        **lq.sorted_out(audit, total, service.AUDIT_SORTS, "-time"),
        "users": users,
        "tokens": service.list_api_tokens(db, who.principal),
        "roles": ("viewer", "operator", "admin"),
    }
    return render(request, "admin.html", who, context)


@router.get("/account/tokens")
def my_tokens(request: Request, who: ReaderDep, db: DbDep) -> Response:
    context = {"tokens": service.list_api_tokens(db, who.principal)}
    return render(request, "tokens.html", who, context)


@router.post("/admin/users")
def create_user(who: AdminWriterDep, db: DbDep) -> Response:
    body = parse(SignupRequest, who.form)
    service.create_user(db, body.username, body.password, body.role)
    return redirect("/admin", ("info", f"Created {body.role.value} {body.username}."))


@router.post("/admin/users/{user_id}")
def update_user(user_id: str, who: AdminWriterDep, db: DbDep) -> Response:
    fields = {k: who.form[k] for k in ("role", "password") if who.form.get(k)}
    if "is_active" in who.form:
        fields["is_active"] = who.form["is_active"]
    body = parse(UserUpdate, fields)
    user = service.update_user(
        db, user_id, role=body.role, is_active=body.is_active, password=body.password
    )
    return redirect("/admin", ("info", f"Updated {user.username}."))


@router.post("/account/tokens")
def create_token(request: Request, who: AnyWriterDep, db: DbDep) -> Response:
    body = parse(ApiTokenCreate, who.form)
    _, plain = service.create_api_token(db, who.principal, body.name, body.expires_days)
    # Shown once, in this response only (never in a redirect or a cookie).
    context = {"tokens": service.list_api_tokens(db, who.principal), "created": plain}
    return render(request, "tokens.html", who, context, status=201)


@router.post("/account/tokens/{token_id}/revoke")
def revoke_token(token_id: str, who: AnyWriterDep, db: DbDep) -> Response:
    row = service.revoke_api_token(db, who.principal, token_id)
    return redirect("/account/tokens", ("info", f"Revoked token {row.name}."))
