from __future__ import annotations

from diskvault.organizer.categorize import Category
from diskvault.organizer.plan import free_name, numbered, plan_rules
from diskvault.organizer.rules import load_rules
from diskvault.organizer.scan import Found
from diskvault.storage import StorageFile

LOC = "file:///share"


def found(key: str, category: str = "disk-image", fmt: str | None = "qcow2") -> Found:
    return Found(StorageFile(key=key, size=10, mtime=0.0), Category(category, fmt))


def test_numbered_names() -> None:
    assert numbered("a/b.qcow2", 2) == "a/b (2).qcow2"
    assert numbered("README", 1) == "README (1)"
    assert free_name("x.iso", lambda k: k in {"x.iso", "x (1).iso"}, "rename") == "x (2).iso"
    assert free_name("x.iso", lambda k: k == "x.iso", "skip") is None


def test_plan_resolves_conflicts_and_leaves_files_in_place_alone() -> None:
    rules = load_rules(
        [
            {"match": {"category": "disk-image"}, "action": "move", "destination": "img/{name}"},
            {
                "match": {"category": "iso"},
                "action": "copy",
                "destination": "img/{name}",
                "on_conflict": "skip",
            },
            {"match": {"category": "other"}, "action": "delete"},
        ]
    )
    existing = {(LOC, "img/taken.qcow2"), (LOC, "img/c.iso")}
    actions = plan_rules(
        [
            found("img/here.qcow2"),  # already where the rule puts it
            found("a/taken.qcow2"),
            found("b/taken.qcow2"),  # same name as the previous one
            found("c.iso", "iso", "iso"),
            found("junk.txt", "other", None),
        ],
        rules,
        location=LOC,
        destination=LOC,
        import_root="file:///lib/imports",
        trash_id="op1",
        exists=lambda root, key: (root, key) in existing,
    )
    got = [(a.op, a.src, a.dst, a.note) for a in actions]
    assert got == [
        ("move", "a/taken.qcow2", "img/taken (1).qcow2", "renamed: img/taken.qcow2 exists"),
        ("move", "b/taken.qcow2", "img/taken (2).qcow2", "renamed: img/taken.qcow2 exists"),
        ("copy", "c.iso", None, "skip: img/c.iso exists"),
        ("trash", "junk.txt", ".diskvault-trash/op1/junk.txt", None),
    ]


def test_import_goes_to_the_library_import_root() -> None:
    rules = load_rules([{"match": {"category": ["disk-image", "iso"]}, "action": "import"}])
    (action,) = plan_rules(
        [found("vm/a.qcow2"), found("n.txt", "other", None)],
        rules,
        location=LOC,
        destination=LOC,
        import_root="file:///lib/imports",
        trash_id="op",
        exists=lambda root, key: False,
    )
    assert (action.op, action.dst_root, action.dst) == (
        "import",
        "file:///lib/imports",
        "vm/a.qcow2",
    )
