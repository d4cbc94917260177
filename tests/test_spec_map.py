"""Issue 17 point 5: docs/spec-map.md names every endpoint, setting and command of the
seed designs (shared/reference/), so a user who read those finds diskvault's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# shared/ lies beside the checkout (CI, the main work tree) or one level up (a worktree).
REFERENCE = next(
    (p / "shared" / "reference" for p in ROOT.parents if (p / "shared" / "reference").is_dir()),
    ROOT.parent / "shared" / "reference",
)
SPEC_MAP = (ROOT / "docs" / "spec-map.md").read_text()


def _named(text: str) -> set[str]:
    found = set(re.findall(r"\b(?:GET|POST|PUT|PATCH|DELETE) `?(/[\w/{}\-.?=]+)", text))
    found |= set(re.findall(r"`(/ws/[\w/{}]+)`", text))
    found |= {f"backup {c}" for c in re.findall(r"sendense-ctl backup (\w+)", text)}
    found |= set(re.findall(r"\b([A-Z][A-Z0-9]*_(?:PATH|PREFIX))\b", text))
    return {re.sub(r"\?.*", "", n).replace("mount-uuid-123", "{mount_id}") for n in found}


def test_every_name_in_the_seed_designs_is_mapped() -> None:
    if not REFERENCE.is_dir():
        pytest.skip(f"the seed designs are not at {REFERENCE}")
    names = set()
    for doc in REFERENCE.glob("*.md"):
        names |= _named(doc.read_text())
    assert len(names) >= 30  # the parser still finds the names
    aliases = {"{id}": ("{id}", "{backup_id}", "{operation_id}", "{image_id}")}
    missing = []
    for name in sorted(names):
        forms = {name} | {name.replace("{id}", a) for a in aliases["{id}"]}
        forms |= {f.replace("{operation_id}", "{id}").replace("{image_id}", "{id}") for f in forms}
        if not any(f in SPEC_MAP for f in forms):
            missing.append(name)
    assert missing == []
