"""Job kinds: a name, a handler, and how failures are treated."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from diskvault.jobs.errors import UnknownJobKind

if TYPE_CHECKING:
    from diskvault.config import Settings
    from diskvault.jobs.context import JobContext

Handler = Callable[["JobContext"], dict[str, Any] | None]
FailureHook = Callable[["Settings", str, dict[str, Any], str], None]  # job_id, params, error


@dataclass(frozen=True)
class JobKind:
    name: str
    handler: Handler
    idempotent: bool = False
    max_attempts: int | None = None  # None: the DISKVAULT_JOB_RETRY_MAX_ATTEMPTS setting
    on_failure: FailureHook | None = None  # also called when the reaper fails the job
    test_only: bool = False
    on_cancel: FailureHook | None = None  # a queued job cancelled before it ran
    # A failed or cancelled job of this kind may be started again with the same parameters
    # (POST /jobs/{id}/retry): each run is checked afresh and creates its own result.
    rerun: bool = False


KINDS: dict[str, JobKind] = {}


def job_kind(
    name: str,
    *,
    idempotent: bool = False,
    max_attempts: int | None = None,
    on_failure: FailureHook | None = None,
    test_only: bool = False,
    on_cancel: FailureHook | None = None,
    rerun: bool = False,
) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        KINDS[name] = JobKind(
            name, fn, idempotent, max_attempts, on_failure, test_only, on_cancel, rerun
        )
        return fn

    return register


def get_kind(name: str) -> JobKind:
    if name not in KINDS:
        load_all()
    try:
        return KINDS[name]
    except KeyError:
        raise UnknownJobKind(kind=name, known=", ".join(sorted(KINDS)) or "none") from None


def load_all() -> None:
    """Import every domain's ``tasks`` module, which registers its job kinds."""
    from diskvault.domains import domain_modules

    domain_modules("tasks")
