"""The apply journal: one :class:`FileRecord` per file action, committed before and after.

``begin`` commits a ``pending`` record before the action touches anything and
``finish`` commits its outcome after, each in its own short transaction, so
that whatever kills the process mid-apply (SIGKILL, power loss, a full disk),
the journal in the database names every action that may have happened.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select, update

from diskvault.db.engine import session_scope
from diskvault.organizer.models import FileRecord, RecordState

# Every state in which an action may have left something behind to undo.
UNDOABLE = (
    RecordState.pending,
    RecordState.done,
    RecordState.failed,
    RecordState.rollback_failed,
)


class Journal:
    def __init__(self, database_url: str, operation_id: str) -> None:
        self.url = database_url
        self.operation_id = operation_id
        with session_scope(self.url) as s:
            last = s.scalar(
                select(func.max(FileRecord.seq)).where(FileRecord.operation_id == operation_id)
            )
        self._seq = int(last or 0)

    def _add(self, state: RecordState, fields: dict[str, Any]) -> int:
        self._seq += 1
        record = FileRecord(operation_id=self.operation_id, seq=self._seq, state=state, **fields)
        with session_scope(self.url) as s:
            s.add(record)
            s.flush()
            return int(record.id)

    def begin(self, **fields: Any) -> int:
        """Record an action about to happen; returns the record id."""
        return self._add(RecordState.pending, fields)

    def note(self, state: RecordState, error: str | None = None, **fields: Any) -> int:
        """Record an action that was decided without touching anything (a skip)."""
        return self._add(state, {**fields, "error": error})

    def finish(self, record_id: int, state: RecordState, error: str | None = None) -> None:
        with session_scope(self.url) as s:
            s.execute(
                update(FileRecord)
                .where(FileRecord.id == record_id)
                .values(state=state, error=error and error[:4000])
            )


def records_to_undo(database_url: str, operation_id: str) -> Sequence[FileRecord]:
    """The records a rollback must look at, last action first."""
    with session_scope(database_url) as s:
        rows = s.scalars(
            select(FileRecord)
            .where(FileRecord.operation_id == operation_id, FileRecord.state.in_(UNDOABLE))
            .order_by(FileRecord.seq.desc())
        ).all()
        s.expunge_all()
        return rows
