"""Organizer job kinds: one per operation type; the job id is the operation id.

None retries by itself: a scan or plan is cheap to ask for again, and an apply
that failed halfway must be looked at (or rolled back), not re-run blindly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from diskvault.jobs.context import JobContext
from diskvault.jobs.registry import job_kind
from diskvault.organizer import engine

# Operation type -> what runs it. Dedupe and import are plans with another planner.
_RUNNERS: dict[str, Callable[[JobContext], dict[str, Any]]] = {
    "scan": engine.run_scan,
    "dupes": engine.run_dupes,
    "plan": engine.run_plan,
    "dedupe": engine.run_plan,
    "import": engine.run_plan,
    "apply": engine.run_apply,
    "rollback": engine.run_rollback,
}
for _op, _run in _RUNNERS.items():
    job_kind(f"organizer-{_op}", max_attempts=1)(_run)
