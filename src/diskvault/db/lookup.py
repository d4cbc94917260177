"""One rule for naming an object: its full id, a unique id prefix, or its name.

The rule, in order: a full 32-character id is taken as it is; then an exact
name (for kinds that have one) wins, so an image called ``beef`` is found by
that name even though ``beef`` also looks like an id prefix; then a prefix of
at least :data:`MIN_PREFIX` hex characters that matches exactly one id. A
prefix that matches several ids is a 409 listing them; a shorter one is a 422.
Anything else is passed on unchanged, so the caller's own lookup says 404.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from diskvault.errors import Conflict, Unprocessable
from diskvault.ids import ID_LENGTH, MIN_PREFIX, shortest_unique

_HEX = re.compile(r"[0-9a-f]+")
_CANDIDATES = 10


class AmbiguousRef(Conflict):
    template = "{kind} {ref!r} matches several ids: {candidates}; give more characters"


class RefTooShort(Unprocessable):
    template = (
        "{kind} {ref!r} is too short: give the name, the full id or at least "
        f"{MIN_PREFIX} characters of it"
    )


def resolve(
    session: Session, model: Any, ref: str, *, kind: str, names: tuple[Any, ...] = ()
) -> str:
    """The full id ``ref`` names under the rule above, or ``ref`` unchanged.

    ``names`` are the columns that name the kind (a machine's name and its MAC)."""
    if len(ref) == ID_LENGTH and _HEX.fullmatch(ref):
        return ref
    for column in names:
        named = session.scalar(select(model.id).where(column == ref).limit(1))
        if named is not None:
            return str(named)
    prefix = ref.lower()
    if not _HEX.fullmatch(prefix):
        return ref
    if len(prefix) < MIN_PREFIX:
        raise RefTooShort(kind=kind, ref=ref)
    query = select(model.id).where(model.id.startswith(prefix, autoescape=True))
    ids = list(session.scalars(query.order_by(model.id).limit(_CANDIDATES + 1)))
    if len(ids) > 1:
        shown = ", ".join(shortest_unique(ids[:_CANDIDATES]).values())
        more = " and more" if len(ids) > _CANDIDATES else ""
        raise AmbiguousRef(kind=kind, ref=ref, candidates=shown + more)
    return str(ids[0]) if ids else ref
