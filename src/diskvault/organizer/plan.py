"""Plans: the file actions rules (or duplicate cleanup) would take, decided up front.

A plan touches nothing. Each :class:`Action` names its source key in the
scanned location and its destination key (in ``dst_root``, default the
location). Destination conflicts are resolved at plan time by the rule's
policy, so the plan shows the names that will be used; apply checks again,
and never overwrites.
"""

from __future__ import annotations

import posixpath
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

from diskvault.organizer.locations import TRASH
from diskvault.organizer.rules import RuleSet, render
from diskvault.organizer.scan import Found

MAX_RENAMES = 1000


@dataclass
class Action:
    # move | copy | import | trash (a rule's delete: moved aside, undoable) |
    # link (a rule's hardlink: a new name for the source) | delete | hardlink
    # (duplicate cleanup, undone from the kept copy named by restore_from)
    op: str
    src: str
    size: int
    mtime: float
    dst: str | None = None
    dst_root: str | None = None  # None: the scanned location
    on_conflict: str = "rename"
    restore_from: str | None = None
    rule: str | None = None
    note: str | None = None

    def as_row(self) -> dict[str, object]:
        return asdict(self)


def numbered(key: str, n: int) -> str:
    """``a/b.qcow2`` -> ``a/b (n).qcow2``."""
    directory, name = posixpath.split(key)
    stem, dot, ext = name.rpartition(".")
    if not stem:
        stem, dot, ext = name, "", ""
    return posixpath.join(directory, f"{stem} ({n}){dot}{ext}")


def free_name(key: str, taken: Callable[[str], bool], policy: str) -> str | None:
    """``key`` if free, else (``rename``) the first free numbered name, else None (skip)."""
    if not taken(key):
        return key
    if policy != "rename":
        return None
    for n in range(1, MAX_RENAMES + 1):
        candidate = numbered(key, n)
        if not taken(candidate):
            return candidate
    return None


class Claims:
    """Destination names already used, in storage or by earlier actions of the plan."""

    def __init__(self, exists: Callable[[str, str], bool]) -> None:
        self._exists = exists
        self._claimed: set[tuple[str, str]] = set()

    def resolve(self, root: str, key: str, policy: str) -> str | None:
        name = free_name(key, lambda k: (root, k) in self._claimed or self._exists(root, k), policy)
        if name is not None:
            self._claimed.add((root, name))
        return name


def plan_rules(
    found: Iterable[Found],
    ruleset: RuleSet,
    *,
    location: str,
    destination: str,
    import_root: str,
    trash_id: str,
    exists: Callable[[str, str], bool],
    now: float | None = None,
) -> list[Action]:
    """One action per file that matches a rule; files already in place are left out."""
    now = time.time() if now is None else now
    claims = Claims(exists)
    actions: list[Action] = []
    for item in found:
        f, cat = item.file, item.category
        rule = ruleset.first_match(f, cat, now)
        if rule is None:
            continue
        label = rule.name or rule.action
        base = Action(op=rule.action, src=f.key, size=f.size, mtime=f.mtime, rule=label)
        if rule.action == "delete":
            base.op, base.dst_root = "trash", location
            base.dst = claims.resolve(location, f"{TRASH}/{trash_id}/{f.key}", "rename")
            actions.append(base)
            continue
        root = import_root if rule.action == "import" else destination
        wanted = render(rule, f, cat) if rule.destination or rule.action != "import" else f.key
        if root == location and wanted == f.key:
            continue  # already where the rule wants it
        base.op = "link" if rule.action == "hardlink" else rule.action
        base.dst_root, base.on_conflict = root, rule.on_conflict
        base.dst = claims.resolve(root, wanted, rule.on_conflict)
        if base.dst is None:
            base.note = f"skip: {wanted} exists"
        elif base.dst != wanted:
            base.note = f"renamed: {wanted} exists"
        actions.append(base)
    return actions
