"""``responses=`` for routes: each status a route can answer, with its problem types.

``problems(ImageNotFound, 409, images_errors)`` takes error classes, whole
``errors`` modules (every DiskvaultError subclass in them) or bare status codes,
and gives the OpenAPI ``responses`` mapping: one entry per status whose body is
problem+json and whose description lists the problem ``type`` URNs.
"""

from __future__ import annotations

import inspect
from http import HTTPStatus
from types import ModuleType
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from diskvault.api.problems import MEDIA_TYPE
from diskvault.auth.errors import InvalidCredentials, InvalidToken, MissingToken, RoleRequired
from diskvault.db.lookup import AmbiguousRef, RefTooShort
from diskvault.errors import DiskvaultError, PayloadTooLarge

VALIDATION_TYPE = "urn:diskvault:error:validation"


class Problem(BaseModel):
    """RFC 9457 problem details; extension members name the fields involved."""

    model_config = ConfigDict(extra="allow")
    type: str = Field(description="a URN such as urn:diskvault:error:image-not-found")
    title: str
    status: int
    detail: str = Field(description="what happened and what to do")
    instance: str | None = None
    request_id: str | None = None


PROBLEM_SCHEMA = Problem.model_json_schema()

Spec = type[DiskvaultError] | ModuleType | int


def _classes(spec: Spec) -> list[type[DiskvaultError]] | int:
    if isinstance(spec, int):
        return spec
    if isinstance(spec, ModuleType):
        return [
            c
            for _, c in inspect.getmembers(spec, inspect.isclass)
            if issubclass(c, DiskvaultError) and c.__module__ == spec.__name__
        ]
    return [spec]


def _slug(cls: type[DiskvaultError]) -> str:
    return f"urn:diskvault:error:{cls.__new__(cls).type_slug}"


def problems(*specs: Spec) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` for these errors (see the module docstring), plus
    what every route can answer: no or a bad token, a role too low, a body too
    large, invalid input (unknown fields and query parameters included)."""
    by_status: dict[int, set[str]] = {400: set(), 422: set()}  # 400: a body that is not JSON
    for common in (InvalidCredentials, InvalidToken, MissingToken, RoleRequired, PayloadTooLarge):
        by_status.setdefault(common.status, set()).add(_slug(common))
    for spec in specs:
        found = _classes(spec)
        if isinstance(found, int):
            by_status.setdefault(found, set())
            continue
        for cls in found:
            by_status.setdefault(cls.status, set()).add(_slug(cls))
    if 422 in by_status:  # whatever else a route refuses, invalid input is refused too
        by_status[422].add(VALIDATION_TYPE)
    out: dict[int | str, dict[str, Any]] = {}
    for status in sorted(by_status):
        phrase = HTTPStatus(status).phrase
        types = sorted(by_status[status])
        description = phrase + (": " + ", ".join(types) if types else "")
        out[status] = {
            "description": description,
            "content": {MEDIA_TYPE: {"schema": PROBLEM_SCHEMA}},
        }
    return out


# For the application (so every route): a path id given as an ambiguous or too short prefix.
COMMON = problems(AmbiguousRef, RefTooShort)
