"""Apply a plan's actions, journaling each one before and after it happens.

Before an action, the source must still be the file the plan saw (same size
and mtime) and, for duplicate cleanup, still byte-identical (SHA-256) to the
copy being kept. Destinations are re-checked and never overwritten. A failed
action is journaled and the rest go on, except a full destination, which stops
the apply at once (nothing more could be written) with the journal intact.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from diskvault.errors import DiskvaultError
from diskvault.organizer import fileops
from diskvault.organizer.errors import ApplyStopped
from diskvault.organizer.journal import Journal
from diskvault.organizer.locations import Providers
from diskvault.organizer.models import RecordState
from diskvault.organizer.plan import Action, free_name
from diskvault.storage import StorageProvider
from diskvault.storage.errors import DestinationExists, ObjectNotFound, StorageError, StorageFull

MTIME_SLACK_S = 0.001  # float seconds survive a round trip through the DB only this well
MAX_ERRORS = 50
NO_DESTINATION = ("delete", "hardlink")  # duplicate cleanup acts on the source only

Importer = Callable[[StorageProvider, str], str | None]


@dataclass
class Env:
    providers: Providers
    journal: Journal
    location: str
    check_cancel: Callable[[], None]
    progress: Callable[[int, int, str], None]  # bytes done, bytes total, message
    pause: Callable[[], None] | None = None  # between actions (a test hook)
    importer: Importer | None = None


@dataclass
class Outcome:
    counts: Counter[str] = field(default_factory=Counter)
    bytes_done: int = 0
    errors: list[str] = field(default_factory=list)
    imported: list[str] = field(default_factory=list)

    def error(self, message: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(message)

    def summary(self, total: int) -> dict[str, Any]:
        return {
            "actions": total,
            **{state.value: self.counts.get(state.value, 0) for state in RecordState},
            "bytes": self.bytes_done,
            "errors": self.errors,
            "imported": self.imported,
        }


def _why_not(env: Env, src_p: StorageProvider, a: Action) -> str | None:
    """Why the action must be skipped now, or None to go ahead."""
    try:
        st = src_p.stat(a.src)
    except ObjectNotFound:
        return f"{a.src} is gone"
    if st.size != a.size or abs(st.mtime - a.mtime) > MTIME_SLACK_S:
        return f"{a.src} changed since it was planned"
    if a.dst is None and a.op not in NO_DESTINATION:
        return a.note or "no free destination name"
    return None


def _perform(env: Env, a: Action, src_p: StorageProvider, dst_p: StorageProvider) -> None:
    dst = a.dst or ""
    if a.op in ("move", "trash"):
        fileops.transfer(src_p, a.src, dst_p, dst, move=True)
    elif a.op in ("copy", "import"):
        fileops.transfer(src_p, a.src, dst_p, dst, move=False)
    elif a.op == "link":
        fileops.link(src_p, a.src, dst)
    elif a.op == "delete":
        src_p.delete(a.src)
    elif a.op == "hardlink":
        assert a.restore_from is not None
        fileops.replace_with_link(src_p, a.src, a.restore_from)
    else:
        raise ValueError(f"unknown action {a.op!r}")


MKDIR = "mkdir"  # a journal record of a directory the next action creates


def new_directories(p: StorageProvider, key: str) -> list[str]:
    """The folders above ``key`` that do not exist yet, outermost first (local storage;
    object stores have no folders)."""
    parts = key.split("/")[:-1]
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    out = []
    for prefix in prefixes:
        path = p.local_path(prefix)
        if path is None:
            return []
        if not path.exists():
            out.append(prefix)
    return out


def _one(env: Env, a: Action, out: Outcome) -> None:
    src_p = env.providers(env.location)
    dst_root = a.dst_root or env.location
    dst_p = env.providers(dst_root)
    fields: dict[str, Any] = {
        "op": a.op,
        "src_root": env.location,
        "src": a.src,
        "dst_root": None if a.op in NO_DESTINATION else dst_root,
        "dst": a.dst,
        "size": a.size,
        "restore_from": a.restore_from,
    }
    reason = _why_not(env, src_p, a)
    if reason is None:
        fields["sha256"] = fileops.sha256(src_p, a.src)
        if a.restore_from and fileops.sha256(src_p, a.restore_from) != fields["sha256"]:
            reason = f"{a.src} is no longer identical to {a.restore_from}"
    if reason is None and a.dst is not None:
        fields["dst"] = free_name(a.dst, dst_p.exists, a.on_conflict)
        if fields["dst"] is None:
            reason = f"skip: {a.dst} exists"
    if reason is not None:
        env.journal.note(RecordState.skipped, reason, **fields)
        out.counts[RecordState.skipped.value] += 1
        return
    a.dst = fields["dst"]
    if fields["dst_root"] is not None:
        for key in new_directories(dst_p, fields["dst"]):  # removed by a rollback if empty
            env.journal.note(RecordState.done, None, op=MKDIR, src_root=dst_root, src=key)
    record = env.journal.begin(**fields)
    try:
        _perform(env, a, src_p, dst_p)
    except StorageFull as exc:
        env.journal.finish(record, RecordState.failed, exc.message)
        raise
    except (StorageError, DestinationExists, OSError) as exc:
        message = getattr(exc, "message", None) or str(exc)
        env.journal.finish(record, RecordState.failed, message)
        out.counts[RecordState.failed.value] += 1
        out.error(f"{a.op} {a.src}: {message}")
        return
    env.journal.finish(record, RecordState.done)
    out.counts[RecordState.done.value] += 1
    if a.op == "import" and env.importer is not None:
        try:
            image = env.importer(dst_p, fields["dst"])
        except DiskvaultError as exc:
            out.error(f"{a.src} copied to {fields['dst']} but not imported: {exc.message}")
        else:
            if image:
                out.imported.append(image)


def apply_actions(actions: Sequence[Action], env: Env, *, operation_id: str) -> dict[str, Any]:
    """Run ``actions`` in order; returns counts by journal state and the errors."""
    out = Outcome()
    total_bytes = sum(a.size for a in actions)
    for i, a in enumerate(actions):
        env.check_cancel()
        env.progress(out.bytes_done, total_bytes, f"{i}/{len(actions)} files: {a.op} {a.src}")
        try:
            _one(env, a, out)
        except StorageFull as exc:
            stopped = ApplyStopped(done=i, total=len(actions), id=operation_id, detail=exc.message)
            stopped.summary = out.summary(len(actions))
            raise stopped from exc
        out.bytes_done += a.size
        if env.pause is not None:
            env.pause()
    env.progress(out.bytes_done, total_bytes, f"{len(actions)}/{len(actions)} files")
    return out.summary(len(actions))
