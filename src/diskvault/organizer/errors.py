"""Errors of the organizer: bad locations, bad rules, operations in the wrong state."""

from __future__ import annotations

from typing import Any

from diskvault.errors import BadRequest, Conflict, Forbidden, InsufficientStorage, NotFound


class LocationNotAllowed(Forbidden):
    template = (
        "location {location} is outside the organizer's allowed roots ({roots}); "
        "use a location inside one of them or add it to DISKVAULT_ORGANIZER_ROOTS"
    )
    title = "Location not allowed"


class BadLocation(BadRequest):
    template = "invalid location {location!r}: {detail}"
    title = "Invalid location"


class InvalidRules(BadRequest):
    template = "invalid organizer rules: {detail}"
    title = "Invalid rules"


class OperationNotFound(NotFound):
    template = "organizer operation {id} was not found; list them with GET /api/v1/operations"


class OperationBusy(Conflict):
    template = "operation {id} is still {status}; wait for it to end (or cancel it) first"
    title = "Operation still running"


class NotRollbackable(Conflict):
    template = "operation {id} cannot be rolled back: {detail}"
    title = "Not rollbackable"


class PlanNotUsable(Conflict):
    template = "operation {id} is not a usable plan: {detail}"
    title = "Plan not usable"


class ApplyStopped(InsufficientStorage):
    summary: dict[str, Any] | None = None  # the counts so far, set by apply
    template = (
        "apply stopped after {done} of {total} actions: {detail}; the journal is kept, "
        "roll back with POST /api/v1/operations/{id}/rollback or free space and plan again"
    )
    title = "Apply stopped"
