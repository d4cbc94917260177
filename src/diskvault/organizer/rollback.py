"""Undo an operation from its journal, last action first.

Each record is judged by what is on storage now, not by its journal state, so
the same rules serve a finished apply, one stopped by a full disk, and one
killed mid-action (a ``pending`` record may or may not have happened). A file
is only moved back or deleted after its SHA-256 matches the journal's; one
that changed since, or whose original place is taken, is reported and left
alone, and the rollback goes on with the rest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from diskvault.organizer import fileops
from diskvault.organizer.apply import MKDIR
from diskvault.organizer.journal import Journal
from diskvault.organizer.locations import Providers
from diskvault.organizer.models import FileRecord, RecordState
from diskvault.storage import StorageProvider
from diskvault.storage.errors import StorageError

RESTORED, NOTHING, CHANGED, NOT_RESTORABLE = (
    "restored",
    "nothing-to-undo",
    "changed",
    "not-restorable",
)
MAX_REPORTED = 200

Verdict = tuple[str, str | None]


def _matches(p: StorageProvider, key: str, sha: str | None) -> bool:
    return sha is not None and fileops.sha256(p, key) == sha


def _undo_move(rec: FileRecord, sp: StorageProvider, dp: StorageProvider) -> Verdict:
    dst = rec.dst or ""
    if not dp.exists(dst):
        if sp.exists(rec.src):
            return NOTHING, "the move never happened"
        return NOT_RESTORABLE, f"{dst} is gone and {rec.src} is not back"
    if not _matches(dp, dst, rec.sha256):
        return CHANGED, f"{dst} changed since the operation; left in place"
    if sp.exists(rec.src):
        if _matches(sp, rec.src, rec.sha256):
            dp.delete(dst)  # killed between copy and delete: drop the extra copy
            return RESTORED, None
        return NOT_RESTORABLE, f"{rec.src} is taken by another file; {dst} left in place"
    fileops.transfer(dp, dst, sp, rec.src, move=True)
    return RESTORED, None


def _undo_copy(rec: FileRecord, sp: StorageProvider, dp: StorageProvider) -> Verdict:
    dst = rec.dst or ""
    if not dp.exists(dst):
        return NOTHING, f"{dst} does not exist"
    if not _matches(dp, dst, rec.sha256):
        return CHANGED, f"{dst} changed since the operation; left in place"
    dp.delete(dst)
    return RESTORED, None


def _undo_link(rec: FileRecord, sp: StorageProvider, dp: StorageProvider) -> Verdict:
    dst = rec.dst or ""
    if not dp.exists(dst):
        return NOTHING, f"{dst} does not exist"
    if not (sp.exists(rec.src) and fileops.same_inode(sp, rec.src, dst)):
        return CHANGED, f"{dst} is no longer a link to {rec.src}; left in place"
    dp.delete(dst)
    return RESTORED, None


def _undo_delete(rec: FileRecord, sp: StorageProvider, dp: StorageProvider) -> Verdict:
    kept = rec.restore_from or ""
    if sp.exists(rec.src):
        if _matches(sp, rec.src, rec.sha256):
            return NOTHING, "the file was never deleted"
        return NOT_RESTORABLE, f"another file now sits at {rec.src}"
    if not sp.exists(kept):
        return NOT_RESTORABLE, f"the kept copy {kept} is gone"
    if not _matches(sp, kept, rec.sha256):
        return CHANGED, f"the kept copy {kept} changed since; cannot rebuild {rec.src}"
    sp.copy(kept, rec.src, overwrite=False)
    return RESTORED, None


def _undo_hardlink(rec: FileRecord, sp: StorageProvider, dp: StorageProvider) -> Verdict:
    kept = rec.restore_from or ""
    if not sp.exists(rec.src):
        return NOT_RESTORABLE, f"{rec.src} is gone"
    if not sp.exists(kept) or not fileops.same_inode(sp, rec.src, kept):
        return NOTHING, f"{rec.src} is not linked to {kept}"
    if not _matches(sp, rec.src, rec.sha256):
        return CHANGED, f"{rec.src} (and {kept}) changed since; left linked"
    fileops.replace_with_copy(sp, rec.src, kept)
    return RESTORED, None


UNDO: dict[str, Callable[[FileRecord, StorageProvider, StorageProvider], Verdict]] = {
    "move": _undo_move,
    "trash": _undo_move,
    "copy": _undo_copy,
    "import": _undo_copy,
    "link": _undo_link,
    "delete": _undo_delete,
    "hardlink": _undo_hardlink,
}


def rollback_records(
    records: Sequence[FileRecord],
    *,
    providers: Providers,
    journal: Journal,
    original: Journal,
    check_cancel: Callable[[], None],
    progress: Callable[[int, int, str], None],
) -> dict[str, Any]:
    """Undo ``records`` (newest first); the rollback's own journal gets one record each."""
    counts: Counter[str] = Counter()
    problems: list[dict[str, str | None]] = []
    folders = [r for r in records if r.op == MKDIR]  # newest (deepest) first
    records = [r for r in records if r.op != MKDIR]
    for i, rec in enumerate(records):
        check_cancel()
        progress(i, len(records), f"{i}/{len(records)} files: undo {rec.op} {rec.src}")
        sp = providers(rec.src_root)
        dp = providers(rec.dst_root) if rec.dst_root else sp
        try:
            verdict, detail = UNDO[rec.op](rec, sp, dp)
        except StorageError as exc:
            verdict, detail = NOT_RESTORABLE, exc.message
        counts[verdict] += 1
        ok = verdict in (RESTORED, NOTHING)
        original.finish(
            rec.id, RecordState.rolled_back if ok else RecordState.rollback_failed, detail
        )
        journal.note(
            RecordState.done
            if verdict == RESTORED
            else (RecordState.skipped if ok else RecordState.failed),
            detail,
            op=f"undo-{rec.op}",
            src_root=rec.dst_root or rec.src_root,
            src=rec.dst or rec.src,
            dst_root=rec.src_root,
            dst=rec.src,
            size=rec.size,
            sha256=rec.sha256,
        )
        if not ok and len(problems) < MAX_REPORTED:
            problems.append({"key": rec.src, "verdict": verdict, "detail": detail})
    progress(len(records), len(records), f"{len(records)} files undone")
    return {
        "records": len(records),
        "folders_removed": _remove_folders(folders, providers, original),
        **{v: counts.get(v, 0) for v in (RESTORED, NOTHING, CHANGED, NOT_RESTORABLE)},
        "problems": problems,
    }


def _remove_folders(folders: Sequence[FileRecord], providers: Providers, original: Journal) -> int:
    """Remove the folders the apply created, once the undo left them empty (the
    operation's trash folder included); a folder holding anything stays."""
    removed = 0
    for rec in folders:
        path = providers(rec.src_root).local_path(rec.src)
        try:
            if path is not None:
                path.rmdir()
                removed += 1
            detail = None
        except FileNotFoundError:
            detail = "already gone"
        except OSError:
            detail = "not empty: left in place"
        original.finish(rec.id, RecordState.rolled_back, detail)
    return removed
