"""The naming rule of db/lookup.py on a real database: id, name, then unique prefix."""

from __future__ import annotations

import pytest

from diskvault.config import Settings
from diskvault.db import lookup
from diskvault.db.engine import session_scope
from diskvault.db.migrate import upgrade
from diskvault.ids import shortest_unique
from diskvault.images.models import Image, ImageStatus

A = "abcd1234" + "0" * 24
B = "abcd9876" + "0" * 24
C = "beef0000" + "1" * 24


@pytest.fixture
def session_url(settings: Settings) -> str:
    upgrade(settings.DATABASE_URL)
    with session_scope(settings.DATABASE_URL) as s:
        for id_, name in ((A, "alpha"), (B, "bravo"), (C, "abcd")):
            s.add(Image(id=id_, name=name, status=ImageStatus.READY))
    return settings.DATABASE_URL


def _resolve(url: str, ref: str) -> str:
    with session_scope(url) as s:
        return lookup.resolve(s, Image, ref, kind="image", names=(Image.name,))


def test_full_ids_names_and_unique_prefixes(session_url: str) -> None:
    assert _resolve(session_url, A) == A
    assert _resolve(session_url, "bravo") == B
    assert _resolve(session_url, "abcd1") == A
    assert _resolve(session_url, "ABCD98") == B
    assert _resolve(session_url, "beef") == C
    # An exact name wins over the id prefix it also is.
    assert _resolve(session_url, "abcd") == C
    # No match: passed on, for the caller's own 404.
    assert _resolve(session_url, "ffff") == "ffff"
    assert _resolve(session_url, "no-such-image") == "no-such-image"


def test_ambiguous_and_short_prefixes(session_url: str) -> None:
    assert _resolve(session_url, "abcd0") == "abcd0"  # no id starts so
    with session_scope(session_url) as s:
        s.add(Image(id="dddd0001" + "0" * 24, name="d1", status=ImageStatus.READY))
        s.add(Image(id="dddd0002" + "0" * 24, name="d2", status=ImageStatus.READY))
    with pytest.raises(lookup.AmbiguousRef) as err:
        _resolve(session_url, "dddd")
    assert err.value.status == 409 and err.value.exit_code == 5
    assert "dddd0001" in err.value.message and "dddd0002" in err.value.message
    with pytest.raises(lookup.RefTooShort) as short:
        _resolve(session_url, "abc")
    assert short.value.status == 422 and "at least 4" in short.value.message


def test_shortest_unique_is_at_least_eight_and_unique() -> None:
    ids = [A, B, C, "abcd1234f" + "0" * 23]
    shown = shortest_unique(ids)
    assert shown[C] == "beef0000"
    assert shown[B] == "abcd9876"
    assert shown[A] == "abcd12340" and shown[ids[3]] == "abcd1234f"
    assert all(v.startswith(k[: len(v)]) or k.startswith(v) for k, v in shown.items())
    assert len(set(shown.values())) == len(ids)
