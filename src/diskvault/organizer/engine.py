"""What each operation's job does; called from :mod:`.tasks` with the job context."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, update

from diskvault.config import Settings
from diskvault.db.engine import session_scope
from diskvault.jobs.context import JobContext
from diskvault.organizer import apply as applying
from diskvault.organizer import importer
from diskvault.organizer.dedupe import find_groups, plan_dedupe
from diskvault.organizer.errors import ApplyStopped
from diskvault.organizer.journal import Journal, records_to_undo
from diskvault.organizer.locations import Providers
from diskvault.organizer.models import Operation, PlanAction, ScannedFile
from diskvault.organizer.plan import Action, plan_rules
from diskvault.organizer.rollback import rollback_records
from diskvault.organizer.rules import RuleSet
from diskvault.organizer.scan import Found, scan

BATCH = 1000
MAX_GROUPS_KEPT = 10_000  # dupes groups stored in the operation summary


def hash_cache_path(settings: Settings) -> Path:
    return settings.DATA_DIR / "organizer" / "hashcache.sqlite"


def _save_summary(settings: Settings, op_id: str, summary: dict[str, Any]) -> None:
    with session_scope(settings.DATABASE_URL) as s:
        s.execute(update(Operation).where(Operation.id == op_id).values(summary=summary))


def _insert(settings: Settings, model: type[Any], rows: list[dict[str, Any]]) -> None:
    for start in range(0, len(rows), BATCH):
        with session_scope(settings.DATABASE_URL) as s:
            s.execute(insert(model), rows[start : start + BATCH])


def _scan(ctx: JobContext, providers: Providers, location: str) -> list[Found]:
    def progress(files: int, size: int) -> None:
        ctx.progress(message=f"scanned {files} files ({size} bytes)")

    return list(
        scan(
            providers(location),
            max_virtual_size=ctx.settings.MAX_VIRTUAL_SIZE,
            temp_dir=ctx.settings.temp_dir,
            progress=progress,
            check_cancel=ctx.check_cancel,
        )
    )


def run_scan(ctx: JobContext) -> dict[str, Any]:
    location = ctx.params["location"]
    found = _scan(ctx, Providers(ctx.settings), location)
    rows = [
        {
            "operation_id": ctx.job_id,
            "key": f.file.key,
            "size": f.file.size,
            "mtime": f.file.mtime,
            "category": f.category.category,
            "format": f.category.format,
            "virtual_size": f.category.virtual_size,
            "note": f.category.note and f.category.note[:500],
        }
        for f in found
    ]
    _insert(ctx.settings, ScannedFile, rows)
    categories = Counter(f.category.category for f in found)
    formats = Counter(f.category.format for f in found if f.category.format)
    summary = {
        "files": len(found),
        "bytes": sum(f.file.size for f in found),
        "categories": dict(categories),
        "formats": dict(formats),
    }
    _save_summary(ctx.settings, ctx.job_id, summary)
    return summary


def _groups(ctx: JobContext, providers: Providers, location: str) -> list[Any]:
    def progress(files: int, read: int) -> None:
        ctx.progress(message=f"{files} files walked, {read} bytes read")

    return find_groups(
        providers(location),
        cache_path=hash_cache_path(ctx.settings),
        progress=progress,
        should_cancel=ctx.should_cancel,
        check_cancel=ctx.check_cancel,
    )


def run_dupes(ctx: JobContext) -> dict[str, Any]:
    groups = _groups(ctx, Providers(ctx.settings), ctx.params["location"])
    summary = {
        "groups": len(groups),
        "duplicate_files": sum(len(g.files) - 1 for g in groups),
        "wasted_bytes": sum(g.wasted_bytes for g in groups),
        "items": [g.as_dict() for g in groups[:MAX_GROUPS_KEPT]],
    }
    _save_summary(ctx.settings, ctx.job_id, summary)
    return {k: v for k, v in summary.items() if k != "items"}


def _exists(providers: Providers) -> Any:
    return lambda root, key: providers(root).exists(key)


def _plan(ctx: JobContext, providers: Providers, op: Operation) -> list[Action]:
    p = ctx.params
    if op.type.value == "dedupe":
        groups = _groups(ctx, providers, op.location)
        return plan_dedupe(
            groups,
            location=op.location,
            strategy=p["strategy"],
            keep=p["keep"],
            quarantine_id=ctx.job_id,
            exists=_exists(providers),
        )
    found = _scan(ctx, providers, op.location)
    return plan_rules(
        found,
        RuleSet.model_validate(p["rules"]),
        location=op.location,
        destination=op.destination or op.location,
        import_root=importer.import_root(ctx.settings),
        trash_id=ctx.job_id,
        exists=_exists(providers),
    )


def _load(settings: Settings, op_id: str) -> Operation:
    with session_scope(settings.DATABASE_URL) as s:
        op = s.get(Operation, op_id)
        if op is None:
            raise LookupError(f"organizer operation {op_id} has no row")
        s.expunge(op)
        return op


def _plan_summary(actions: list[Action]) -> dict[str, Any]:
    return {
        "actions": len(actions),
        "by_op": dict(Counter(a.op for a in actions)),
        "bytes": sum(a.size for a in actions),
        "skips": sum(1 for a in actions if a.dst is None and a.op not in applying.NO_DESTINATION),
    }


def run_plan(ctx: JobContext) -> dict[str, Any]:
    """Plan (dry run), or plan and apply in one operation."""
    op = _load(ctx.settings, ctx.job_id)
    providers = Providers(ctx.settings)
    actions = _plan(ctx, providers, op)
    if ctx.params.get("dry_run"):
        rows = [{"operation_id": op.id, "seq": i, **a.as_row()} for i, a in enumerate(actions, 1)]
        _insert(ctx.settings, PlanAction, rows)
        summary = _plan_summary(actions)
        _save_summary(ctx.settings, op.id, summary)
        return summary
    return _apply(ctx, providers, op, actions)


def run_apply(ctx: JobContext) -> dict[str, Any]:
    op = _load(ctx.settings, ctx.job_id)
    if op.source_id is None:
        return run_plan(ctx)
    with session_scope(ctx.settings.DATABASE_URL) as s:
        rows = s.scalars(
            select(PlanAction)
            .where(PlanAction.operation_id == op.source_id)
            .order_by(PlanAction.seq)
        ).all()
        fields = Action.__dataclass_fields__
        actions = [Action(**{k: getattr(r, k) for k in fields}) for r in rows]
    return _apply(ctx, Providers(ctx.settings), op, actions)


def _apply(
    ctx: JobContext, providers: Providers, op: Operation, actions: list[Action]
) -> dict[str, Any]:
    delay = ctx.settings.ORGANIZER_APPLY_DELAY_S
    env = applying.Env(
        providers=providers,
        journal=Journal(ctx.settings.DATABASE_URL, op.id),
        location=op.location,
        check_cancel=ctx.check_cancel,
        progress=lambda done, total, msg: ctx.progress(done, total, message=msg),
        pause=(lambda: ctx.sleep(delay)) if delay > 0 else None,
        importer=importer.hook(ctx.settings),
    )
    started = time.monotonic()
    try:
        summary = applying.apply_actions(actions, env, operation_id=op.id)
    except ApplyStopped as exc:
        _save_summary(ctx.settings, op.id, {**(exc.summary or {}), "stopped": exc.message})
        raise
    summary["seconds"] = round(time.monotonic() - started, 3)
    _save_summary(ctx.settings, op.id, summary)
    return summary


def run_rollback(ctx: JobContext) -> dict[str, Any]:
    target_id = ctx.params["target"]
    url = ctx.settings.DATABASE_URL
    records = records_to_undo(url, target_id)
    summary = rollback_records(
        records,
        providers=Providers(ctx.settings),
        journal=Journal(url, ctx.job_id),
        original=Journal(url, target_id),
        check_cancel=ctx.check_cancel,
        progress=lambda done, total, msg: ctx.progress(done, total, message=msg),
    )
    summary["target"] = target_id
    _save_summary(ctx.settings, ctx.job_id, summary)
    with session_scope(url) as s:
        s.execute(
            update(Operation).where(Operation.id == target_id).values(rolled_back_by=ctx.job_id)
        )
    return summary
