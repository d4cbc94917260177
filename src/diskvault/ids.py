"""Object ids as people see them: 32 hex characters, shown at their shortest unique length.

No imports beyond the standard library: the CLI uses this while rendering lists.
"""

from __future__ import annotations

ID_LENGTH = 32
MIN_PREFIX = 4  # the shortest prefix accepted back (db/lookup.py)
SHOWN_LENGTH = 8  # lists show ids at least this long (longer where needed to stay unique)


def shortest_unique(ids: list[str], minimum: int = SHOWN_LENGTH) -> dict[str, str]:
    """Each id cut to the shortest length (at least ``minimum``) that no other id shares."""
    ordered = sorted(set(ids))
    out = {}
    for i, full in enumerate(ordered):
        common = 0
        for other in ordered[max(i - 1, 0) : i + 2]:
            if other != full:
                common = max(common, _common_prefix(full, other))
        out[full] = full[: max(minimum, common + 1)]
    return {i: out[i] for i in ids}


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
