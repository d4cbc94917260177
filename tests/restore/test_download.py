"""Downloads from a mount: whole files, ranges, and directories as tar and zip,
compared by hash with what was written into the guest."""

from __future__ import annotations

import os
import stat
import subprocess
import zipfile
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from support.http import assert_problem
from support.restore_disks import (
    GUEST_PASSWD,
    LEGACY_FILE,
    LEGACY_LINK,
    LEGACY_TEXT,
    UNICODE_DIR,
    UNICODE_FILE,
    UNICODE_TEXT,
    index_php,
    sha256,
    tar_file,
    tar_members,
    zip_file,
)
from support.restore_world import World

BIG = 100 * 1024 * 1024


def fetch(api: TestClient, mount_id: str, path: str, **kw: Any) -> Any:
    headers = kw.pop("headers", {})
    return api.get(
        f"/api/v1/restore/{mount_id}/download", params={"path": path, **kw}, headers=headers
    )


def test_big_file_streams_whole(world: World, api: TestClient, gpt_mount: str) -> None:
    resp = fetch(api, gpt_mount, "/big.bin")
    assert resp.status_code == 200
    assert resp.headers["content-length"] == str(BIG)
    assert resp.headers["accept-ranges"] == "bytes"
    assert resp.headers["content-disposition"] == (
        "attachment; filename=\"big.bin\"; filename*=UTF-8''big.bin"
    )
    assert "last-modified" in resp.headers
    assert sha256(resp.content) == world.big_sha


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-99", 0, 100),
        ("bytes=5000000-5999999", 5_000_000, 6_000_000),
        ("bytes=-10", BIG - 10, BIG),
        (f"bytes={BIG - 3}-", BIG - 3, BIG),
        (f"bytes=10-{BIG + 50}", 10, BIG),
    ],
)
def test_ranges(api: TestClient, gpt_mount: str, header: str, start: int, end: int) -> None:
    whole = fetch(api, gpt_mount, "/big.bin", headers={"Range": "bytes=0-6000000"}).content
    resp = fetch(api, gpt_mount, "/big.bin", headers={"Range": header})
    assert resp.status_code == 206
    assert resp.headers["content-range"] == f"bytes {start}-{end - 1}/{BIG}"
    assert len(resp.content) == end - start
    if end <= len(whole):
        assert resp.content == whole[start:end]


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "items=0-9", "bytes=9-3", "bytes=x-"])
def test_ranges_not_served_get_the_whole_file(api: TestClient, gpt_mount: str, header: str) -> None:
    """Several ranges, other units and malformed ones: the whole file (RFC 9110 allows it),
    not FileResponse's own multipart or 400 answers."""
    resp = fetch(api, gpt_mount, "/etc/passwd", headers={"Range": header})
    assert resp.status_code == 200 and resp.text == GUEST_PASSWD
    assert resp.headers["accept-ranges"] == "bytes" and "content-range" not in resp.headers


def test_unsatisfiable_range_is_416(api: TestClient, gpt_mount: str) -> None:
    resp = fetch(api, gpt_mount, "/etc/passwd", headers={"Range": "bytes=9999-"})
    assert_problem(resp, 416)
    assert resp.headers["content-range"] == f"bytes */{len(GUEST_PASSWD)}"


def test_unicode_file_name(api: TestClient, gpt_mount: str) -> None:
    resp = fetch(api, gpt_mount, f"/{UNICODE_DIR}/{UNICODE_FILE}")
    assert resp.text == UNICODE_TEXT
    assert "filename*=UTF-8''%E6%97%A5%E6%9C%AC%E8%AA%9E%20" in resp.headers["content-disposition"]


def test_directory_as_tar(world: World, api: TestClient, gpt_mount: str, tmp_path: Path) -> None:
    resp = fetch(api, gpt_mount, "/", partition=1)
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/x-tar"
    assert 'filename="partition-1.tar"' in resp.headers["content-disposition"]
    data = resp.content
    members = tar_members(data)
    top = "partition-1"
    assert sha256(tar_file(data, f"{top}/big.bin")) == world.big_sha
    assert tar_file(data, f"{top}/var/www/index.php").decode() == index_php(3)
    assert tar_file(data, f"{top}/{UNICODE_DIR}/{UNICODE_FILE}").decode() == UNICODE_TEXT
    assert tar_file(data, f"{top}/deep/a/b/c/d/e/leaf.txt") == b"deep leaf\n"
    link = members[f"{top}/passwd-link"]
    assert link.issym() and link.linkname == "/etc/passwd"  # a link, not the host's file
    assert members[f"{top}/escape-link"].linkname == "../../../../../../../etc/passwd"
    assert members[f"{top}/empty"].isdir()
    assert members[f"{top}/bin/tool.sh"].mode == 0o755
    assert f"{top}/pipe" not in members  # no data to restore
    # GNU tar agrees: it lists and extracts the stream.
    (tmp_path / "p1.tar").write_bytes(data)
    listing = subprocess.run(
        ["tar", "-tvf", tmp_path / "p1.tar"], capture_output=True, text=True, timeout=60
    )
    assert listing.returncode == 0, listing.stderr
    assert "passwd-link -> /etc/passwd" in listing.stdout


def test_subdirectory_as_tar_and_zip(api: TestClient, gpt_mount: str) -> None:
    tar = fetch(api, gpt_mount, "/var").content
    assert sorted(tar_members(tar)) == [
        "var",
        "var/www",
        "var/www/html",
        "var/www/html/page.html",
        "var/www/index.php",
    ]
    resp = fetch(api, gpt_mount, "/var", format="zip")
    assert resp.headers["content-type"] == "application/zip"
    assert 'filename="var.zip"' in resp.headers["content-disposition"]
    with zipfile.ZipFile(BytesIO(resp.content)) as z:
        assert z.testzip() is None
        assert z.namelist() == [
            "var/",
            "var/www/",
            "var/www/html/",
            "var/www/html/page.html",
            "var/www/index.php",
        ]
    assert zip_file(resp.content, "var/www/index.php").decode() == index_php(3)
    assert tar_file(tar, "var/www/html/page.html") == zip_file(
        resp.content, "var/www/html/page.html"
    )


def test_zip_keeps_links_and_unicode(api: TestClient, gpt_mount: str) -> None:
    data = fetch(api, gpt_mount, "/", partition=2, format="zip").content
    with zipfile.ZipFile(BytesIO(data)) as z:
        infos = {i.filename: i for i in z.infolist()}
    top = "partition-2"
    link = infos[f"{top}/report-link"]
    assert stat.S_ISLNK(link.external_attr >> 16)
    assert zip_file(data, f"{top}/report-link") == b"docs/report.txt"
    assert zip_file(data, f"{top}/{UNICODE_FILE}").decode() == UNICODE_TEXT
    assert zip_file(data, f"{top}/docs/report.txt") == b"xfs report\n" * 20


def test_fat_and_ntfs_directories(api: TestClient, gpt_mount: str) -> None:
    fat = fetch(api, gpt_mount, "/DOCS", partition=4).content
    assert tar_file(fat, "DOCS/REPORT.TXT") == b"quarterly report\n" * 50
    ntfs = fetch(api, gpt_mount, "/docs", partition=5, format="zip").content
    assert zip_file(ntfs, "docs/nested/deeper/leaf.txt") == b"ntfs leaf\n"


def stored_bytes(world: World) -> int:
    """Bytes in files under the data dir, not looking into the mounts."""
    total = 0
    for top, dirs, names in os.walk(world.settings.DATA_DIR):
        dirs[:] = [d for d in dirs if Path(top, d) != world.settings.mount_root]
        total += sum(os.lstat(os.path.join(top, n)).st_size for n in names)
    return total


def test_tar_stream_is_not_staged(world: World, api: TestClient, gpt_mount: str) -> None:
    """The ext4 tar is over 100 MiB and streams chunked; nothing of it is written."""
    before = stored_bytes(world)
    with api.stream(
        "GET", f"/api/v1/restore/{gpt_mount}/download", params={"path": "/", "partition": 1}
    ) as resp:
        assert "content-length" not in resp.headers
        got = sum(len(chunk) for chunk in resp.iter_bytes())
    assert got > BIG
    assert stored_bytes(world) < before + 4 * 1024 * 1024  # only DB and log growth


def test_names_that_are_not_utf8_survive_zip_and_tar(
    world: World, api: TestClient, tmp_path: Path
) -> None:
    """A Latin-1 file name used to abort the zip stream half-way (UnicodeEncodeError)."""
    resp = api.post("/api/v1/restore/mount", json={"backup_id": world.flat_points[-1]})
    assert resp.status_code == 201, resp.text
    mount_id = resp.json()["mount_id"]
    try:
        raw_file, raw_link = os.fsencode(LEGACY_FILE), os.fsencode(LEGACY_LINK)
        listed = api.get(f"/api/v1/restore/{mount_id}/files", params={"path": "/legacy"})
        assert {e["name"] for e in listed.json()["items"]} == {
            "caf\ufffd.txt",
            "lien-\ufffd",
            "plain.txt",
        }
        data = fetch(api, mount_id, "/legacy", format="zip").content
        with zipfile.ZipFile(BytesIO(data)) as z:
            assert z.testzip() is None
            infos = {i.filename: i for i in z.infolist()}
        # Raw bytes without the UTF-8 flag (readers fall back to CP437); UTF-8 names flagged.
        cp437_file = f"legacy/{raw_file.decode('cp437')}"
        assert not infos[cp437_file].flag_bits & 0x800
        assert zip_file(data, cp437_file) == LEGACY_TEXT
        assert zip_file(data, f"legacy/{raw_link.decode('cp437')}") == raw_file
        assert zip_file(data, "legacy/plain.txt") == b"plain\n"
        (tmp_path / "legacy.zip").write_bytes(data)
        out = tmp_path / "unzipped"
        unzipped = subprocess.run(
            ["unzip", "-q", str(tmp_path / "legacy.zip"), "-d", str(out)],
            capture_output=True,
            timeout=60,
        )
        assert unzipped.returncode == 0, unzipped.stderr
        assert (out / "legacy" / "plain.txt").read_bytes() == b"plain\n"
        tar = fetch(api, mount_id, "/legacy").content
        assert tar_file(tar, f"legacy/{LEGACY_FILE}") == LEGACY_TEXT
        assert tar_members(tar)[f"legacy/{LEGACY_LINK}"].linkname == LEGACY_FILE
    finally:
        assert api.delete(f"/api/v1/restore/{mount_id}").status_code == 200
