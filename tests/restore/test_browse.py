"""Path resolution on a plain directory standing in for a guest root: symlinks
are followed the guest's way and can never reach the host's files."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from diskvault.restore import browse
from diskvault.restore.errors import PathOutside

GUEST = "guest passwd\n"


@pytest.fixture
def root(tmp_path: Path) -> Iterator[int]:
    guest = tmp_path / "guest"
    (guest / "etc").mkdir(parents=True)
    (guest / "etc/passwd").write_text(GUEST)
    (guest / "srv/www").mkdir(parents=True)
    (guest / "srv/www/index.html").write_text("index\n")
    links = {
        "abs": "/etc/passwd",
        "up": "../../../../etc/passwd",
        "www": "/srv/www",
        "chain": "www/../../abs",
        "loop-a": "loop-b",
        "loop-b": "loop-a",
        "host": str(tmp_path / "outside.txt"),
        "etc/self": "..",
    }
    for name, target in links.items():
        os.symlink(target, guest / name)
    (tmp_path / "outside.txt").write_text("host secret\n")
    fd = os.open(guest, os.O_RDONLY | os.O_DIRECTORY)
    yield fd
    os.close(fd)


def read(root: int, path: str) -> str:
    fd = browse.resolve(root, browse.split(path))
    with os.fdopen(fd) as fh:
        return fh.read()


@pytest.mark.parametrize("path", ["/abs", "up", "/chain", "etc/self/etc/self/abs"])
def test_links_resolve_inside_the_root(root: int, path: str) -> None:
    assert read(root, path) == GUEST
    assert Path("/etc/passwd").read_text() != GUEST


def test_directory_links_are_followed_inside(root: int) -> None:
    assert read(root, "/www/index.html") == "index\n"


def test_absolute_link_to_a_host_file_is_not_found(root: int) -> None:
    with pytest.raises(FileNotFoundError):
        browse.resolve(root, browse.split("/host"))


def test_link_loops_stop(root: int) -> None:
    with pytest.raises(OSError) as info:
        browse.resolve(root, ["loop-a"])
    assert info.value.errno == errno.ELOOP


@pytest.mark.parametrize("path", ["..", "/a/../b", "../../etc/passwd", "x\x00y"])
def test_split_refuses_dotdot_and_nul(path: str) -> None:
    with pytest.raises(PathOutside) as info:
        browse.split(path)
    assert info.value.status == 400


def test_split_normalises_harmless_forms() -> None:
    assert browse.split("//a/./b/") == ["a", "b"]
    assert browse.split("") == browse.split("/") == []


def test_walk_lists_links_without_following_them(root: int) -> None:
    seen = {rel: browse.kind(st.st_mode) for rel, _fd, _name, st in browse.walk(root)}
    assert seen["www"] == "symlink" and "www/index.html" not in seen
    assert seen["srv/www/index.html"] == "file" and seen["etc/self"] == "symlink"
    assert list(seen) == sorted(seen, key=lambda p: p.split("/"))  # parents first


def test_display_keeps_json_safe_names() -> None:
    raw = os.fsdecode(b"caf\xe9.txt")
    assert browse.display(raw) == "caf\ufffd.txt"
    assert browse.display("日本語") == "日本語"
