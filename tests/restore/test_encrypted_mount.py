"""A file-level restore mount of a point in an encrypted repository: the chain is
opened layer by layer with the repository's key, and without it nothing mounts."""

from __future__ import annotations

from pathlib import Path

import pytest
import xxhash

from diskvault.backups import keys
from diskvault.backups.errors import KeyUnavailable
from diskvault.db.engine import session_scope
from diskvault.restore import service
from diskvault.restore.models import RestoreMount
from diskvault.tools import mount as mount_tool
from support.backups_env import add_repo, add_source, backup, make_settings
from support.restore_disks import MiB, data_tree, ext4_image

MARKER = "encrypted-mount-marker-51c2"


def test_mount_of_an_encrypted_point(tmp_path: Path) -> None:
    if not (mount_tool.loop_available() and mount_tool.fuse_available()):
        pytest.skip("needs loop devices and FUSE")
    settings = make_settings(tmp_path / "data")
    key = tmp_path / "vault.key"
    keys.create(key)
    root = tmp_path / "repo"
    repo = add_repo(settings, "vault", root, encryption="luks", key_file=str(key))
    tree = data_tree(tmp_path / "tree", "ext4")
    (tree / "secret.txt").write_text(MARKER * 100)
    disk = ext4_image(tmp_path / "flat.raw", tree, 24 * MiB, label="FLAT")
    add_source(settings, "flat", "raw", path=str(disk))
    backup(settings, "flat", repo, "full")
    (tree / "secret.txt").write_text(MARKER + " version 2\n")
    ext4_image(tmp_path / "flat2.raw", tree, 24 * MiB, label="FLAT").rename(disk)
    head = backup(settings, "flat", repo, "incremental")
    for path in root.rglob("*"):
        assert not path.is_file() or MARKER.encode() not in path.read_bytes(), path
    # The raw source's hash maps are keyed: a known cluster's plain hash is not there.
    zero = xxhash.xxh3_128_digest(bytes(64 * 1024))
    maps = list(root.rglob("*.hashmap"))
    assert len(maps) == 2 and all(zero not in m.read_bytes() for m in maps)

    with session_scope(settings.DATABASE_URL) as s:
        row = service.mount(s, settings, head, owner=None)
        mount_id, workdir = row.id, Path(row.workdir)
        parts = [p for p in row.partitions if p["mounted"]]
    try:
        assert len(parts) == 1
        text = (workdir / parts[0]["mountpoint"] / "secret.txt").read_text()
        assert text == MARKER + " version 2\n"
    finally:
        with session_scope(settings.DATABASE_URL) as s:
            service.unmount(s, settings, mount_id)

    needed = keys.load(key).fingerprint
    key.write_bytes(b"9" * 64)  # the wrong key in its place
    with (
        session_scope(settings.DATABASE_URL) as s,
        pytest.raises(KeyUnavailable, match=needed),
    ):
        service.mount(s, settings, head, owner=None)
    with session_scope(settings.DATABASE_URL) as s:
        assert s.query(RestoreMount).count() == 1  # only the first, unmounted
