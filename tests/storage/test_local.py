"""Local provider: real directories, symlinks, hard links, a second device, a full disk."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from diskvault.fsutil import PARTIAL_SUFFIX
from diskvault.storage import (
    InvalidKey,
    LocalStorageProvider,
    ObjectNotFound,
    StorageFull,
)

MiB = 1024 * 1024


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory next to the root, holding a file nobody should reach through it."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "secret").write_bytes(b"top secret")
    return path


def partials(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(PARTIAL_SUFFIX)]


def test_root_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFound):
        LocalStorageProvider(tmp_path / "missing")
    created = LocalStorageProvider(tmp_path / "new" / "root", create=True)
    assert created.root.is_dir()
    assert created.url == (tmp_path / "new" / "root").as_uri()


def test_local_path_is_the_real_file(local: LocalStorageProvider) -> None:
    local.write("images/a.qcow2", io.BytesIO(b"qcow"))
    path = local.local_path("images/a.qcow2")
    assert path == local.root / "images" / "a.qcow2"
    assert path is not None and path.read_bytes() == b"qcow"


def test_stat_reports_inode_for_hard_links(local: LocalStorageProvider) -> None:
    local.write("one", io.BytesIO(b"same bytes"))
    os.link(local.root / "one", local.root / "two")
    one, two = local.stat("one"), local.stat("two")
    assert (one.inode, one.device) == (two.inode, two.device)
    assert one.nlink == 2
    assert one.url == (local.root / "one").as_uri()
    assert one.etag is None


def test_symlink_inside_root_is_followed(local: LocalStorageProvider) -> None:
    local.write("real/file.img", io.BytesIO(b"content"))
    (local.root / "alias.img").symlink_to(local.root / "real" / "file.img")
    (local.root / "realdir").symlink_to("real")
    with local.open_read("alias.img") as fh:
        assert fh.read() == b"content"
    assert local.stat("realdir/file.img").size == 7
    keys = [f.key for page in local.scan() for f in page]
    # The file link is listed; the folder link is not descended (its files are listed anyway).
    assert keys == ["alias.img", "real/file.img"]


def test_symlink_escaping_root_is_refused(local: LocalStorageProvider, outside: Path) -> None:
    (local.root / "escape").symlink_to(outside)
    (local.root / "leak").symlink_to(outside / "secret")
    for key in ("escape/secret", "leak"):
        with pytest.raises(InvalidKey, match="outside the storage root"):
            local.open_read(key)
        with pytest.raises(InvalidKey):
            local.hash(key)
        with pytest.raises(InvalidKey):
            local.copy(key, "stolen")
    assert not (local.root / "stolen").exists()
    # Escaping links are left out of listings, not followed.
    assert [f.key for page in local.scan() for f in page] == []


def test_symlink_escaping_root_is_refused_as_destination(
    local: LocalStorageProvider, outside: Path
) -> None:
    (local.root / "escape").symlink_to(outside)
    (local.root / "dangling").symlink_to(outside / "planted")
    local.write("src", io.BytesIO(b"payload"))
    for key in ("escape/planted", "dangling"):
        with pytest.raises(InvalidKey):
            local.write(key, io.BytesIO(b"payload"))
        with pytest.raises(InvalidKey):
            local.copy("src", key)
        with pytest.raises(InvalidKey):
            local.move("src", key)
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert (outside / "secret").read_bytes() == b"top secret"


def test_symlink_loop_is_refused(local: LocalStorageProvider) -> None:
    (local.root / "a").symlink_to("b")
    (local.root / "b").symlink_to("a")
    with pytest.raises(InvalidKey, match="loop"):
        local.stat("a")
    assert [f.key for page in local.scan() for f in page] == []


def test_dotdot_and_absolute_keys_never_touch_disk(
    local: LocalStorageProvider, outside: Path
) -> None:
    for key in ("../outside/secret", "x/../../outside/secret", str(outside / "secret")):
        with pytest.raises(InvalidKey):
            local.open_read(key)
        with pytest.raises(InvalidKey):
            local.delete(key)
    assert (outside / "secret").exists()


def test_failed_write_leaves_no_partial(local: LocalStorageProvider) -> None:
    class Broken(io.RawIOBase):
        sent = False

        def readable(self) -> bool:
            return True

        def readinto(self, b: memoryview) -> int:  # type: ignore[override]
            if self.sent:
                raise OSError(5, "Input/output error")
            self.sent = True
            b[:10] = b"0123456789"
            return 10

    with pytest.raises(OSError, match="Input/output"):
        local.write("dir/img.raw", Broken())
    assert not (local.root / "dir" / "img.raw").exists()
    assert partials(local.root) == []


def test_write_through_directory_is_refused(local: LocalStorageProvider) -> None:
    local.write("folder/file", io.BytesIO(b"x"))
    with pytest.raises(InvalidKey, match="directory"):
        local.write("folder", io.BytesIO(b"y"))
    with pytest.raises(InvalidKey, match="directory"):
        local.move("folder", "elsewhere")
    assert local.stat("folder").is_dir
    assert partials(local.root) == []


def test_scan_skips_special_files(local: LocalStorageProvider) -> None:
    os.mkfifo(local.root / "pipe")
    local.write("plain", io.BytesIO(b"1"))
    assert [f.key for page in local.scan() for f in page] == ["plain"]


def test_list_cursor_resumes_across_folders(local: LocalStorageProvider) -> None:
    for key in ["a-b", "a/x", "a/y/z", "b"]:
        local.write(key, io.BytesIO(b""))
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page, cursor = local.list("", cursor, 1)
        seen += [f.key for f in page]
        if cursor is None:
            break
    assert seen == [f.key for page in local.scan() for f in page]
    assert sorted(seen) == ["a-b", "a/x", "a/y/z", "b"]


def test_move_to_another_device_copies_then_deletes(
    local: LocalStorageProvider, tmpfs: Path
) -> None:
    data = os.urandom(200 * 1024)
    local.write("disk.img", io.BytesIO(data))
    root_device = local.stat("disk.img").device
    moved = local.move("disk.img", "mnt/disk.img")
    assert moved.device == os.stat(tmpfs).st_dev != root_device
    assert (tmpfs / "disk.img").read_bytes() == data
    assert not (local.root / "disk.img").exists()
    assert partials(local.root) == []


def test_full_disk_raises_storage_full(local: LocalStorageProvider, tmpfs: Path) -> None:
    with pytest.raises(StorageFull) as info:
        local.write("mnt/too-big.img", io.BytesIO(b"\0" * (2 * MiB)))
    assert info.value.status == 507
    assert list(tmpfs.iterdir()) == []
