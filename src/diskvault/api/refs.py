"""Path parameters that name an object accept a prefix or a name (see db/lookup.py).

One dependency, given to the whole application, rewrites such a parameter to
the full id before the route reads it, so every route, the console's and the
CLI's requests included, follows the same rule without doing anything.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import HTTPConnection

from diskvault.auth.models import ApiToken, User
from diskvault.backups.models import Backup, BackupPolicy, BackupRepository, BackupSource
from diskvault.boot.models import Machine, Recovery
from diskvault.db import lookup
from diskvault.db.engine import session_scope
from diskvault.ids import ID_LENGTH
from diskvault.images.models import Image
from diskvault.jobs.models import Job
from diskvault.organizer.models import Operation
from diskvault.restore.models import RestoreMount
from diskvault.targets.models import Target

# parameter name -> (model, the columns that name it, the kind named in errors)
BY_PARAM: dict[str, tuple[Any, tuple[Any, ...], str]] = {
    "image_id": (Image, (Image.name,), "image"),
    "machine_id": (Machine, (Machine.name, Machine.mac), "machine"),
    "backup_id": (Backup, (), "restore point"),
    "job_id": (Job, (), "job"),
    "target_id": (Target, (Target.iqn,), "target"),
    "recovery_id": (Recovery, (Recovery.mac,), "recovery"),
    "mount_id": (RestoreMount, (), "mount"),
    "op_id": (Operation, (), "organizer operation"),
    "user_id": (User, (User.username,), "user"),
    "token_id": (ApiToken, (), "token"),
}
# Routes whose parameter is already "name or id": only the prefix part is added.
BY_PREFIX: dict[str, tuple[Any, str]] = {
    "/api/v1/sources/": (BackupSource, "source"),
    "/api/v1/repositories/": (BackupRepository, "repository"),
    "/api/v1/policies/": (BackupPolicy, "policy"),
}


def _model_for(path: str, param: str) -> tuple[Any, tuple[Any, ...], str] | None:
    if param in BY_PARAM:
        return BY_PARAM[param]
    if param in ("name", "ref"):
        for prefix, (model, kind) in BY_PREFIX.items():
            if path.startswith(prefix):
                return model, (model.name,), kind
    return None


def resolve_path_refs(conn: HTTPConnection) -> None:
    params: dict[str, Any] = conn.scope.get("path_params") or {}
    todo = []
    for key, value in params.items():
        found = _model_for(conn.url.path, key)
        if found is not None and isinstance(value, str) and len(value) != ID_LENGTH:
            todo.append((key, value, found))
    if not todo:
        return  # full ids (the common case) cost no query
    with session_scope(conn.app.state.settings.DATABASE_URL) as session:
        for key, value, (model, names, kind) in todo:
            params[key] = lookup.resolve(session, model, value, kind=kind, names=names)
