"""Apply and rollback against real directories and a real journal database."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from diskvault.config import Settings
from diskvault.organizer.apply import Env, apply_actions
from diskvault.organizer.journal import Journal, records_to_undo
from diskvault.organizer.locations import Providers
from diskvault.organizer.plan import Action
from diskvault.organizer.rollback import rollback_records
from support.organizer_trees import put, snapshot


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _action(root: Path, op: str, src: str, dst: str | None, **kw: object) -> Action:
    st = (root / src).stat()
    return Action(op=op, src=src, dst=dst, size=st.st_size, mtime=st.st_mtime, **kw)  # type: ignore[arg-type]


def _env(settings: Settings, op_id: str, root: Path) -> Env:
    return Env(
        providers=Providers(settings),
        journal=Journal(settings.DATABASE_URL, op_id),
        location=root.as_uri(),
        check_cancel=lambda: None,
        progress=lambda *_: None,
    )


def _rollback(settings: Settings, op_id: str) -> dict[str, object]:
    url = settings.DATABASE_URL
    return rollback_records(
        records_to_undo(url, op_id),
        providers=Providers(settings),
        journal=Journal(url, "undo-" + op_id[:20]),
        original=Journal(url, op_id),
        check_cancel=lambda: None,
        progress=lambda *_: None,
    )


def test_apply_never_overwrites_a_destination_that_appeared_after_planning(
    migrated: Settings, tmp_path: Path
) -> None:
    root = tmp_path / "share"
    put(root / "a.txt", b"A")
    put(root / "b.txt", b"B")
    actions = [
        _action(root, "move", "a.txt", "out/x.txt"),
        _action(root, "move", "b.txt", "out/y.txt", on_conflict="skip"),
    ]
    put(root / "out" / "x.txt", b"appeared")
    put(root / "out" / "y.txt", b"appeared too")

    summary = apply_actions(actions, _env(migrated, "op-conflict", root), operation_id="op")

    assert summary["done"] == 1 and summary["skipped"] == 1
    assert (root / "out" / "x.txt").read_bytes() == b"appeared"
    assert (root / "out" / "x (1).txt").read_bytes() == b"A"
    assert (root / "out" / "y.txt").read_bytes() == b"appeared too"
    assert (root / "b.txt").read_bytes() == b"B"


def test_a_source_changed_since_the_plan_is_skipped(migrated: Settings, tmp_path: Path) -> None:
    root = tmp_path / "share"
    put(root / "a.txt", b"original")
    action = _action(root, "copy", "a.txt", "b.txt")
    (root / "a.txt").write_bytes(b"edited!!")
    os.utime(root / "a.txt", (1, 1))
    summary = apply_actions([action], _env(migrated, "op-changed", root), operation_id="op")
    assert summary["skipped"] == 1 and not (root / "b.txt").exists()


def test_links_and_trash_roll_back(migrated: Settings, tmp_path: Path) -> None:
    root = tmp_path / "share"
    put(root / "a.bin", os.urandom(1000))
    put(root / "junk.bin", os.urandom(1000))
    before = snapshot(root)
    actions = [
        _action(root, "link", "a.bin", "linked/a.bin"),
        _action(root, "trash", "junk.bin", ".diskvault-trash/op/junk.bin"),
    ]
    summary = apply_actions(actions, _env(migrated, "op-link", root), operation_id="op")
    assert summary["done"] == 2
    assert (root / "linked" / "a.bin").stat().st_ino == (root / "a.bin").stat().st_ino
    assert not (root / "junk.bin").exists()
    assert _rollback(migrated, "op-link")["restored"] == 2
    assert snapshot(root) == before


def test_rollback_of_pending_records_after_a_crash(migrated: Settings, tmp_path: Path) -> None:
    """Journals as a SIGKILL leaves them: each action pending, done or not, or half done."""
    root, other = tmp_path / "share", tmp_path / "other"
    other.mkdir()
    data = {name: os.urandom(5000) for name in ("moved", "not-moved", "half", "dup", "kept")}
    data["dup"] = data["kept"]
    for name, payload in data.items():
        put(root / name, payload)
    journal = Journal(migrated.DATABASE_URL, "crashed-op")
    loc = root.as_uri()

    def pending(op: str, src: str, dst_root: str | None, dst: str | None, **kw: object) -> None:
        journal.begin(
            op=op,
            src_root=loc,
            src=src,
            dst_root=dst_root,
            dst=dst,
            size=5000,
            sha256=_sha(root / src),
            **kw,
        )

    pending("move", "moved", loc, "sorted/moved")
    os.renames(root / "moved", root / "sorted" / "moved")  # it happened, "done" was never written
    pending("move", "not-moved", loc, "sorted/not-moved")  # killed before it happened
    pending("move", "half", other.as_uri(), "half")
    put(other / "half", data["half"])  # cross-device: copied, source not yet deleted
    pending("delete", "dup", None, None, restore_from="kept")
    (root / "dup").unlink()

    result = _rollback(migrated, "crashed-op")

    assert result["restored"] == 3 and result["nothing-to-undo"] == 1, result
    assert {k: v for k, v in snapshot(root).items()} == {
        name: hashlib.sha256(payload).hexdigest() for name, payload in data.items()
    }
    assert not (other / "half").exists()


def test_rollback_refuses_to_overwrite_a_reused_source_path(
    migrated: Settings, tmp_path: Path
) -> None:
    root = tmp_path / "share"
    put(root / "a.txt", b"first")
    apply_actions(
        [_action(root, "move", "a.txt", "b.txt")],
        _env(migrated, "op-reuse", root),
        operation_id="x",
    )
    put(root / "a.txt", b"a newcomer")
    result = _rollback(migrated, "op-reuse")
    assert result["not-restorable"] == 1
    assert (root / "a.txt").read_bytes() == b"a newcomer"
    assert (root / "b.txt").read_bytes() == b"first"


@pytest.mark.parametrize("strategy", ["delete", "hardlink"])
def test_dedupe_refuses_files_that_are_no_longer_identical(
    migrated: Settings, tmp_path: Path, strategy: str
) -> None:
    root = tmp_path / "share"
    put(root / "kept", b"same bytes")
    put(root / "copy", b"same bytes")
    action = _action(root, strategy, "copy", None, restore_from="kept")
    (root / "kept").write_bytes(b"SAME BYTES")  # edited in place after the scan
    summary = apply_actions([action], _env(migrated, f"op-{strategy}", root), operation_id="x")
    assert summary["skipped"] == 1
    assert (root / "copy").read_bytes() == b"same bytes"


def test_rollback_removes_the_folders_the_apply_created(migrated: Settings, tmp_path: Path) -> None:
    """Issue 17: after a rollback, empty Games/2024/ and the trash folder stayed behind."""
    root = tmp_path / "share"
    put(root / "a.img", os.urandom(1000))
    put(root / "junk.bin", os.urandom(1000))
    put(root / "kept" / "old.txt", b"there before")
    (root / "empty-before").mkdir()
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    actions = [
        _action(root, "move", "a.img", "Games/2024/a.img"),
        _action(root, "copy", "kept/old.txt", "empty-before/old.txt"),
        _action(root, "trash", "junk.bin", ".diskvault-trash/op/junk.bin"),
    ]
    summary = apply_actions(actions, _env(migrated, "op-dirs", root), operation_id="op")
    assert summary["done"] == 3 and (root / "Games" / "2024" / "a.img").exists()
    result = _rollback(migrated, "op-dirs")
    assert result["restored"] == 3 and result["folders_removed"] == 4
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # dirs too


def test_rollback_keeps_a_created_folder_that_is_no_longer_empty(
    migrated: Settings, tmp_path: Path
) -> None:
    root = tmp_path / "share"
    put(root / "a.img", os.urandom(1000))
    actions = [_action(root, "move", "a.img", "Games/a.img")]
    apply_actions(actions, _env(migrated, "op-busy", root), operation_id="op")
    put(root / "Games" / "mine.txt", b"added by a user after the apply")
    assert _rollback(migrated, "op-busy")["folders_removed"] == 0
    assert (root / "Games" / "mine.txt").read_bytes() == b"added by a user after the apply"
    assert (root / "a.img").exists()
