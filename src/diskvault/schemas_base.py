"""What every request model shares: unknown fields are refused, never dropped.

Every request body (and every YAML/JSON file a user hands us) is validated by a
:class:`RequestModel`. An unknown key is a 422 naming it, with the field it most
likely meant ("``keep_dayly``: unknown field; did you mean ``keep_daily``?"); a
key the API only returns (``id``, ``created_at``...) is called read-only.
:func:`explain` turns pydantic's errors into those messages, for the API's
problem+json and the CLI's file checks alike.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    field_validator,
)

MAX_INT = 2**31  # offsets, counts, versions: far above any real value, far below 2^63
MAX_DAYS = 36500  # a hundred years
MAX_PATH = 4096
# Bytes (8 PiB): the largest integer a JSON client holds exactly (2^53); the
# configured caps (DISKVAULT_MAX_VIRTUAL_SIZE) are checked as well.
MAX_SIZE = 2**53

# Fields the API returns but never takes; sent on input, they are named read-only.
READ_ONLY = frozenset(
    {
        "id",
        "created_at",
        "updated_at",
        "started_at",
        "finished_at",
        "completed_at",
        "last_used_at",
        "revoked_at",
        "expires_at",
        "owner",
        "status",
        "error",
        "job_id",
    }
)


def no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain a NUL byte")
    return value


def _no_nul_within(value: Any) -> Any:
    if isinstance(value, str):
        no_nul(value)
    elif isinstance(value, list | tuple):
        for item in value:
            _no_nul_within(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            _no_nul_within(key)
            _no_nul_within(item)
    return value


# A filesystem path as given by a client: bounded, and never with a NUL (the OS
# would refuse it deep inside a service with a ValueError).
PathStr = Annotated[str, Field(min_length=1, max_length=MAX_PATH), AfterValidator(no_nul)]


def _json_integer(value: Any) -> Any:
    """JSON ``true`` or ``"7"`` is not a number (pydantic's lax mode would take both);
    ``7.0`` is, as JSON Schema's ``integer`` says."""
    if isinstance(value, bool | str):
        raise ValueError("must be an integer (a JSON number, not a string or boolean)")
    return value


JSON_INT = BeforeValidator(_json_integer)
JsonInt = Annotated[int, JSON_INT]
# Bounds before the validator, or pydantic leaves them out of the JSON schema.
Count = Annotated[int, Field(ge=0, le=MAX_INT), JSON_INT]
PositiveInt = Annotated[int, Field(ge=1, le=MAX_INT), JSON_INT]
Days = Annotated[float, Strict(), Field(ge=0, le=MAX_DAYS, allow_inf_nan=False)]


class RequestModel(BaseModel):
    """Base of every request model: an unknown field is an error, not a no-op."""

    model_config = ConfigDict(extra="forbid")
    read_only: ClassVar[frozenset[str]] = READ_ONLY

    # No text field takes a NUL: paths, names and URLs alike (PostgreSQL and the
    # OS refuse it late, as a 500).
    _no_nul = field_validator("*", mode="after")(_no_nul_within)


def field_names(model: type[BaseModel]) -> list[str]:
    names = []
    for name, info in model.model_fields.items():
        alias = info.validation_alias if isinstance(info.validation_alias, str) else info.alias
        names.append(alias or name)
    return names


def unknown_field_message(
    key: str, accepted: Iterable[str], read_only: Iterable[str] = READ_ONLY
) -> str:
    """``unknown field; did you mean `x`?``, or the read-only note, or the accepted list."""
    accepted = sorted(accepted)
    if key in read_only:
        return "read-only field: the server sets it, it cannot be given"
    close = difflib.get_close_matches(key, accepted, n=1, cutoff=0.6)
    if close:
        return f"unknown field; did you mean `{close[0]}`?"
    listed = ", ".join(accepted) if accepted else "none"
    return f"unknown field; accepted: {listed}"


def _strip(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _tags(model: type[BaseModel]) -> set[str]:
    """The names pydantic puts in a union member's error location: its class name
    and, for a discriminated union, its Literal tag values."""
    tags = {model.__name__}
    for info in model.model_fields.values():
        if get_origin(info.annotation) is Literal:
            tags.update(str(a) for a in get_args(info.annotation))
    return tags


def _step(tp: Any, part: str | int) -> tuple[Any, bool] | None:
    """The type one location part leads to, and whether the part was consumed."""
    tp = _strip(tp)
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        members = [m for m in get_args(tp) if m is not type(None)]
        for m in members:
            if _is_model(_strip(m)) and str(part) in _tags(_strip(m)):
                return _strip(m), True
        models = [m for m in members if _is_model(_strip(m)) or get_origin(_strip(m))]
        return (models[0], False) if len(models) == 1 else None
    if _is_model(tp):
        for name, info in tp.model_fields.items():
            if part in (name, info.alias, info.validation_alias):
                return info.annotation, True
        return None
    if origin in (list, tuple, set, frozenset, Sequence) and isinstance(part, int):
        return get_args(tp)[0], True
    if origin is dict:
        return get_args(tp)[1], True
    return None


def _walk(root: Any, loc: Sequence[str | int]) -> tuple[type[BaseModel] | None, set[int]]:
    """The model holding the field at ``loc`` under ``root`` (None if unknown), and
    which parts of ``loc`` are union tags (pydantic's, not the client's field names)."""
    tp: Any = root
    tags: set[int] = set()
    at = 0
    for _ in range(4 * len(loc) + 4):  # a union step may not consume; bounded anyway
        if at >= len(loc):
            break
        step = _step(tp, loc[at])
        if step is None:
            return None, tags
        was_union = get_origin(_strip(tp)) in (Union, types.UnionType)
        tp, consumed = step
        if consumed:
            if was_union:
                tags.add(at)
            at += 1
    tp = _strip(tp)
    if get_origin(tp) in (Union, types.UnionType):
        members = [_strip(m) for m in get_args(tp) if _is_model(_strip(m))]
        tp = members[0] if len(members) == 1 else None
    return (tp if _is_model(tp) else None), tags


def _branch_tag(part: Any) -> bool:
    """A location part naming a scalar union branch (``str``, ``constrained-str``...)."""
    return isinstance(part, str) and (part in ("str", "int", "constrained-str") or "[" in part)


def _one_branch(errors: list[Any]) -> list[Any]:
    """For ``str | Model`` unions pydantic reports why each branch failed; when the
    input was an object, the scalar branch's "not a string" is noise: drop it."""
    locs = [tuple(e.get("loc", ())) for e in errors]
    kept = []
    for err, loc in zip(errors, locs, strict=True):
        noise = isinstance(err.get("input"), dict) and any(
            _branch_tag(part)
            and any(o[:i] == loc[:i] and len(o) > i and o[i] != part for o in locs)
            for i, part in enumerate(loc)
        )
        if not noise:
            kept.append(err)
    return kept


def explain(errors: Iterable[Any], root: Any, prefix: int = 0) -> list[dict[str, Any]]:
    """pydantic errors with every unknown field's message made helpful.

    ``root`` is the type validated; ``prefix`` location parts (such as ``body``)
    come before its fields. Each error keeps ``type``, ``loc`` and ``msg``.
    """
    out = []
    for err in _one_branch(list(errors)):
        loc = [p if isinstance(p, int) else str(p) for p in err.get("loc", ())]
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        kind = str(err.get("type", ""))
        if root is not None and len(loc) > prefix:
            model, tags = _walk(root, loc[prefix:-1])
            if kind == "extra_forbidden":
                accepted = field_names(model) if model is not None else []
                read_only = getattr(model, "read_only", READ_ONLY)
                msg = unknown_field_message(str(loc[-1]), accepted, read_only)
                if str(loc[-1]) in read_only:
                    kind = "read_only"
            loc = [p for i, p in enumerate(loc) if i - prefix not in tags]
        out.append({"type": kind, "loc": [str(p) for p in loc], "msg": msg})
    return out


def describe(err: dict[str, Any]) -> str:
    """``keep_dayly: unknown field; did you mean `keep_daily`?``"""
    loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query")) or "body"
    return f"{loc}: {err.get('msg', 'invalid')}"


__all__ = [
    "JSON_INT",
    "MAX_DAYS",
    "MAX_INT",
    "MAX_SIZE",
    "READ_ONLY",
    "Count",
    "Days",
    "JsonInt",
    "PathStr",
    "PositiveInt",
    "RequestModel",
    "describe",
    "explain",
]
