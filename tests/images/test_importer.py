from __future__ import annotations

import hashlib
import os
from ipaddress import ip_address
from pathlib import Path

import pytest

from diskvault.config import Settings
from diskvault.images import importer, urls
from diskvault.images.errors import ImportFailed, ImportRefused, UploadTooLarge
from support.images_util import file_server, patched_dns


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
    ],
)
def test_url_scheme_port_and_credentials(tmp_path: Path, url: str, ok: bool) -> None:
    # An allowlisted name resolving to loopback: no traffic leaves this machine.
    cfg = Settings(DATA_DIR=tmp_path, IMPORT_URL_ALLOWED_HOSTS=["images.example.com"])
    with patched_dns({"images.example.com": "127.0.0.1"}):
        if ok:
            importer.check_url(cfg, url)
        else:
            with pytest.raises(ImportRefused):
                importer.check_url(cfg, url)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "cloud-metadata"),
        ("fd00:ec2::254", "cloud-metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "not-globally-routable"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "cloud-metadata"),
        ("2002:7f00:1::", "loopback"),  # 6to4 wrapping 127.0.0.1
        ("93.184.216.34", None),
        ("2606:4700::1111", None),
        ("::ffff:93.184.216.34", None),
    ],
)
def test_address_refusals(address: str, reason: str | None) -> None:
    assert urls.refusal(ip_address(address)) == reason


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("localhost", "loopback"),
        ("2130706433", "loopback"),  # 127.0.0.1 as one number
        ("0x7f.1", "loopback"),
        ("[::ffff:127.0.0.1]", "loopback"),
        ("[::1]", "loopback"),
        ("169.254.169.254", "cloud-metadata"),
        ("[fd00:ec2::254]", "cloud-metadata"),
        ("10.0.0.1", "private"),
    ],
)
def test_internal_hosts_are_refused_by_default(tmp_path: Path, host: str, reason: str) -> None:
    cfg = Settings(DATA_DIR=tmp_path)
    with pytest.raises(ImportRefused) as caught:
        importer.check_url(cfg, f"http://{host}/x.img")
    assert caught.value.fields["reason"] == reason
    assert "DISKVAULT_IMPORT_URL_ALLOWED_HOSTS" in caught.value.message


def test_a_name_with_one_internal_address_is_refused(tmp_path: Path) -> None:
    cfg = Settings(DATA_DIR=tmp_path)
    with (
        patched_dns({"mixed.example.com": ["93.184.216.34", "10.0.0.7"]}),
        pytest.raises(ImportRefused, match=r"10\.0\.0\.7, a private address"),
    ):
        importer.check_url(cfg, "http://mixed.example.com/x.img")


def test_fetch_connects_to_the_vetted_address_not_a_second_dns_answer(tmp_path: Path) -> None:
    """DNS rebinding: the name is resolved once, vetted, and that address is used."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "disk.img").write_bytes(b"good" * 1000)
    with file_server(root, host="127.0.0.2") as srv:
        cfg = Settings(
            DATA_DIR=tmp_path,
            IMPORT_URL_ALLOWED_PORTS=[srv.port],
            IMPORT_URL_ALLOWED_HOSTS=["127.0.0.2"],
        )
        answers = iter(["127.0.0.2", "127.0.0.1", "127.0.0.1"])
        with patched_dns({"rebind.example.com": lambda: next(answers)}):
            url = f"http://rebind.example.com:{srv.port}/disk.img"
            size, _ = urls.fetch_url(cfg, url, tmp_path / "a", limit=10**6)
    assert size == 4000
    assert srv.seen_hosts == [f"rebind.example.com:{srv.port}"]


def test_fetch_hashes_follows_allowed_redirects_and_refuses_others(tmp_path: Path) -> None:
    root = tmp_path / "www"
    root.mkdir()
    payload = os.urandom(300_000)
    (root / "disk.img").write_bytes(payload)
    with (
        file_server(root) as other,
        file_server(root, {"/moved": "/disk.img", "/away": other.url("disk.img")}) as srv,
    ):
        cfg = Settings(
            DATA_DIR=tmp_path,
            IMPORT_URL_ALLOWED_PORTS=[srv.port],
            IMPORT_URL_ALLOWED_HOSTS=["127.0.0.1"],
        )
        size, sha = urls.fetch_url(cfg, srv.url("moved"), tmp_path / "a", limit=10**6)
        assert (size, sha) == (len(payload), hashlib.sha256(payload).hexdigest())
        assert (tmp_path / "a").read_bytes() == payload
        with pytest.raises(ImportRefused, match=f"port {other.port}"):
            urls.fetch_url(cfg, srv.url("away"), tmp_path / "b", limit=10**6)
        with pytest.raises(UploadTooLarge):
            urls.fetch_url(cfg, srv.url("disk.img"), tmp_path / "c", limit=1000)
        with pytest.raises(ImportFailed, match="HTTP 404"):
            urls.fetch_url(cfg, srv.url("nope"), tmp_path / "d", limit=1000)
        # Without the allowlist, the loopback server is out of reach.
        cfg.IMPORT_URL_ALLOWED_HOSTS = []
        with pytest.raises(ImportRefused, match="loopback"):
            urls.fetch_url(cfg, srv.url("disk.img"), tmp_path / "e", limit=10**6)
    assert not (tmp_path / "e").exists()


def test_a_redirect_to_loopback_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "www"
    root.mkdir()
    (root / "disk.img").write_bytes(b"secret")
    with (
        file_server(root) as internal,
        file_server(root, {"/go": internal.url("disk.img")}, host="127.0.0.2") as srv,
    ):
        cfg = Settings(
            DATA_DIR=tmp_path,
            IMPORT_URL_ALLOWED_PORTS=[srv.port, internal.port],
            IMPORT_URL_ALLOWED_HOSTS=["127.0.0.2"],  # the first hop only
        )
        with pytest.raises(ImportRefused, match=r"127\.0\.0\.1, a loopback address") as caught:
            urls.fetch_url(cfg, srv.url("go"), tmp_path / "a", limit=10**6)
    assert caught.value.fields["reason"] == "loopback"
    assert internal.seen_hosts == [] and not (tmp_path / "a").exists()


def test_allowlist_by_name_and_by_network(tmp_path: Path) -> None:
    root = tmp_path / "www"
    root.mkdir()
    (root / "disk.img").write_bytes(b"x" * 512)
    with file_server(root) as srv:
        for allowed, host in [
            (["LocalHost"], "localhost"),
            (["127.0.0.0/8"], "2130706433"),
            (["127.0.0.1"], "127.0.0.1"),
        ]:
            cfg = Settings(
                DATA_DIR=tmp_path,
                IMPORT_URL_ALLOWED_PORTS=[srv.port],
                IMPORT_URL_ALLOWED_HOSTS=allowed,
            )
            dest = tmp_path / f"{host}.img"
            urls.fetch_url(cfg, f"http://{host}:{srv.port}/disk.img", dest, limit=10**6)
            assert dest.read_bytes() == b"x" * 512


def test_a_nul_in_a_path_or_url_is_a_bad_request(cfg: Settings) -> None:
    with pytest.raises(ImportFailed, match="NUL"), importer.open_import_path(cfg, "/srv/a\0b"):
        pass
    with pytest.raises(ImportFailed, match="control characters"):
        importer.check_url(cfg, "http://example.com/a\0b")


def test_a_hard_link_is_refused(cfg: Settings, tmp_path: Path) -> None:
    """A hard link inside a root to a file outside it (say /etc/shadow) reads nothing."""
    outside = tmp_path / "shadow"
    outside.write_bytes(b"root:secret")
    link = cfg.IMPORT_ROOTS[0] / "innocent.img"
    os.link(outside, link)
    with (
        pytest.raises(ImportRefused, match="2 hard links"),
        importer.open_import_path(cfg, str(link)),
    ):
        pass
    with pytest.raises(ImportRefused):
        importer.copy_path(cfg, str(link), tmp_path / "copy")
    assert not (tmp_path / "copy").exists()
