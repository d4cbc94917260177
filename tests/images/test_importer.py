from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from diskvault.config import Settings
from diskvault.images import importer
from diskvault.images.errors import ImportFailed, ImportRefused, UploadTooLarge
from support.images_util import file_server


@pytest.fixture
def cfg(tmp_path: Path) -> Settings:
    root = tmp_path / "imports"
    root.mkdir()
    return Settings(DATA_DIR=tmp_path / "data", IMPORT_ROOTS=[root])


def test_path_inside_a_root_is_copied_with_its_hash(cfg: Settings, tmp_path: Path) -> None:
    src = cfg.IMPORT_ROOTS[0] / "sub" / "disk.img"
    src.parent.mkdir()
    src.write_bytes(os.urandom(100_000))
    dest = tmp_path / "copy"
    size, sha = importer.copy_path(cfg, str(src), dest)
    assert (size, sha) == (100_000, hashlib.sha256(src.read_bytes()).hexdigest())
    assert dest.read_bytes() == src.read_bytes()


@pytest.mark.parametrize(
    "make",
    [
        lambda root, tmp: "/etc/passwd",
        lambda root, tmp: f"{root}/../outside.img",
        lambda root, tmp: "relative/disk.img",
        lambda root, tmp: str(_link(root / "escape.img", tmp / "outside.img")),
        lambda root, tmp: str(_link(root / "dirlink", tmp) / "outside.img"),
    ],
    ids=["absolute-outside", "dotdot", "relative", "symlink-escape", "dir-symlink-escape"],
)
def test_paths_outside_the_roots_are_refused(cfg: Settings, tmp_path: Path, make) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "outside.img").write_bytes(b"secret")
    raw = make(cfg.IMPORT_ROOTS[0], tmp_path)
    with pytest.raises(ImportRefused), importer.open_import_path(cfg, raw):
        pass


def _link(link: Path, target: Path) -> Path:
    link.symlink_to(target)
    return link


def test_symlink_inside_the_root_is_fine_and_fifos_are_refused(cfg: Settings) -> None:
    root = cfg.IMPORT_ROOTS[0]
    (root / "real.img").write_bytes(b"x" * 4096)
    _link(root / "alias.img", root / "real.img")
    with importer.open_import_path(cfg, str(root / "alias.img")) as path:
        assert path.read_bytes() == b"x" * 4096
    os.mkfifo(root / "pipe")
    with pytest.raises(ImportRefused), importer.open_import_path(cfg, str(root / "pipe")):
        pass
    with pytest.raises(ImportFailed), importer.open_import_path(cfg, str(root / "missing")):
        pass


def test_no_roots_means_no_path_imports(tmp_path: Path) -> None:
    with (
        pytest.raises(ImportRefused),
        importer.open_import_path(Settings(DATA_DIR=tmp_path), "/srv/x.img"),
    ):
        pass


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://images.example.com/a.qcow2", True),
        ("http://images.example.com:80/a.qcow2", True),
        ("http://images.example.com:8080/a.qcow2", False),
        ("ftp://images.example.com/a.qcow2", False),
        ("file:///etc/passwd", False),
        ("https://user:pw@images.example.com/a.qcow2", False),
        ("https://other.example.com/a.qcow2", False),
    ],
)
def test_url_allowlist(tmp_path: Path, url: str, ok: bool) -> None:
    cfg = Settings(DATA_DIR=tmp_path, IMPORT_URL_ALLOWED_HOSTS=["images.example.com"])
    if ok:
        importer.check_url(cfg, url)
    else:
        with pytest.raises(ImportRefused):
            importer.check_url(cfg, url)


def test_fetch_hashes_follows_allowed_redirects_and_refuses_others(tmp_path: Path) -> None:
    root = tmp_path / "www"
    root.mkdir()
    payload = os.urandom(300_000)
    (root / "disk.img").write_bytes(payload)
    with (
        file_server(root) as other,
        file_server(root, {"/moved": "/disk.img", "/away": other.url("disk.img")}) as srv,
    ):
        cfg = Settings(DATA_DIR=tmp_path, IMPORT_URL_ALLOWED_PORTS=[srv.port])
        size, sha = importer.fetch_url(cfg, srv.url("moved"), tmp_path / "a", limit=10**6)
        assert (size, sha) == (len(payload), hashlib.sha256(payload).hexdigest())
        assert (tmp_path / "a").read_bytes() == payload
        with pytest.raises(ImportRefused, match=f"port {other.port}"):
            importer.fetch_url(cfg, srv.url("away"), tmp_path / "b", limit=10**6)
        with pytest.raises(UploadTooLarge):
            importer.fetch_url(cfg, srv.url("disk.img"), tmp_path / "c", limit=1000)
        with pytest.raises(ImportFailed, match="HTTP 404"):
            importer.fetch_url(cfg, srv.url("nope"), tmp_path / "d", limit=1000)
