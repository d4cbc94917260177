"""Encryption at rest (LUKS qcow2 under a repository key) and zstd compression, with
real qemu-img and qemu-storage-daemon: chains, merges, verify, copy, restore,
plain ``qemu-img`` restores, wrong keys, rekey, and a killed worker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import xxhash

from diskvault.backups import chain as chains
from diskvault.backups import copy as copies
from diskvault.backups import keys, policies, repositories, restore, verify
from diskvault.backups.errors import (
    EncryptionLocked,
    InvalidKeyFile,
    InvalidRepository,
    KeyUnavailable,
)
from diskvault.backups.models import Backup, BackupRepository, RepositoryKind
from diskvault.backups.sources.daemon import stop_stale
from diskvault.config import Settings
from diskvault.db.engine import session_scope
from diskvault.tools import qemu_img
from diskvault.tools.qsd import QsdServer
from support import qemu_io
from support.backups_env import add_repo, add_source, backup, image, point, save
from support.backups_servers import qemu_nbd, url
from support.crypto_env import MARKER, has_marker, make_key, marked_disk, opened, same_as

MiB = 1024 * 1024
SIZE = 16 * MiB


def rewrite(disk: Path, tmp: Path, offset: int, seed: int) -> None:
    """Write 1 MiB of marker text and a pattern elsewhere, as a guest would."""
    piece = tmp / "piece.bin"
    piece.write_bytes((MARKER + f" changed {seed}\n".encode()) * (MiB // (len(MARKER) + 12)))
    length = piece.stat().st_size // 512 * 512
    qemu_io.run(
        disk,
        "qcow2",
        [f"write -s {piece} {offset} {length}", f"write -P {seed} {offset + 4 * MiB} 65536"],
    )


def luks_repo(settings: Settings, path: Path, key: Path, **kw: object) -> str:
    return add_repo(settings, "secure", path, encryption="luks", key_file=str(key), **kw)


@pytest.fixture
def key(tmp_path: Path) -> Path:
    return make_key(tmp_path / "repo.key")


@pytest.fixture
def vm(bsettings: Settings, tmp_path: Path) -> Path:
    disk = marked_disk(tmp_path / "vm1.qcow2", tmp_path, SIZE)
    add_source(bsettings, "vm1", "qcow2", disks=[str(disk)])
    return disk


# -- keys ---------------------------------------------------------------------------


def test_key_file_is_created_once_and_only_its_fingerprint_is_stored(
    bsettings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "new.key"
    with session_scope(bsettings.DATABASE_URL) as s:
        repo = repositories.create_repository(
            s,
            bsettings,
            name="secure",
            kind=RepositoryKind.local,
            path=str(tmp_path / "repo"),
            url=None,
            encryption="luks",
            key_file=str(path),
            create_key=True,
        )
        paper, fingerprint = repo.paper_key, repo.key_fingerprint  # type: ignore[attr-defined]
    data = path.read_bytes()
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert len(data) == 64 and not data.endswith(b"\n")
    assert fingerprint == keys.fingerprint(data) and fingerprint in paper
    assert data[:4].decode() in paper and "qemu-img convert --object secret" in paper
    db = b"".join(p.read_bytes() for p in bsettings.DATA_DIR.glob("diskvault.db*"))  # + WAL
    assert fingerprint.encode() in db and data not in db
    # A key file is never overwritten: a second creation at the same path is refused.
    with (
        pytest.raises(InvalidKeyFile, match="already exists"),
        session_scope(bsettings.DATABASE_URL) as s,
    ):
        repositories.create_repository(
            s,
            bsettings,
            name="other",
            kind=RepositoryKind.local,
            path=str(tmp_path / "repo2"),
            url=None,
            encryption="luks",
            key_file=str(path),
            create_key=True,
        )
    assert path.read_bytes() == data


@pytest.mark.parametrize(
    ("content", "mode", "message"),
    [
        (None, 0o600, "No such file"),
        ("dir", 0o700, "not a regular file"),
        (b"short-key", 0o600, "too short"),
        (b"\x00\x01binary" * 8, 0o600, "binary"),
        (b"k" * 64, 0o644, "chmod 600"),
        (b"k" * 8000, 0o600, "not a key file"),
    ],
)
def test_bad_key_file_is_refused_at_creation(
    bsettings: Settings, tmp_path: Path, content: bytes | str | None, mode: int, message: str
) -> None:
    path = tmp_path / "bad.key"
    if content == "dir":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    if path.exists():
        path.chmod(mode)
    with pytest.raises(InvalidKeyFile, match=message):
        add_repo(bsettings, "secure", tmp_path / "repo", encryption="luks", key_file=str(path))
    with session_scope(bsettings.DATABASE_URL) as s:
        assert s.query(BackupRepository).filter_by(name="secure").count() == 0


def test_encryption_with_compression_is_refused(
    bsettings: Settings, tmp_path: Path, key: Path, vm: Path
) -> None:
    """QEMU writes the compressed clusters of a LUKS qcow2 in the clear (shown here with
    qemu-storage-daemon alone), which is why diskvault refuses the combination."""
    leak = tmp_path / "leak.qcow2"
    secret = f"secret,id=s,file={key}"
    options = {"encrypt.format": "luks", "encrypt.key-secret": "s", "compression_type": "zstd"}
    qemu_img.create(leak, "qcow2", SIZE, options=options, objects=[secret])
    with QsdServer(tmp_path / "qsd", name="leak") as qsd:
        qsd.add_secret("k", key.read_bytes())
        qsd.blockdev_add("s", "qcow2", filename=vm, read_only=True)
        qsd.blockdev_add("t", "qcow2", filename=leak, encrypt={"format": "luks", "key-secret": "k"})
        qsd.blockdev_backup("j", "s", "t", compress=True)
        qsd.wait_job("j")
        qsd.blockdev_del("t")
    assert qemu_img.info(leak, "qcow2")["encrypted"] is True
    assert leak in has_marker(tmp_path)
    with pytest.raises(InvalidRepository, match="unencrypted"):
        luks_repo(bsettings, tmp_path / "repo", key, compression="zstd")
    repo = luks_repo(bsettings, tmp_path / "repo", key)
    with session_scope(bsettings.DATABASE_URL) as s, pytest.raises(InvalidRepository):
        row = s.get(BackupRepository, repo)
        keys.update_repository(s, bsettings, row, {"compression": "zstd"})


def test_encryption_without_a_key_is_refused(bsettings: Settings, tmp_path: Path) -> None:
    with pytest.raises(InvalidRepository, match="DISKVAULT_BACKUP_KEY_FILE"):
        add_repo(bsettings, "secure", tmp_path / "repo", encryption="luks")


# -- an encrypted, compressed chain ---------------------------------------------------------


def test_encrypted_chain_full_and_three_incrementals(
    bsettings: Settings, tmp_path: Path, vm: Path, key: Path
) -> None:
    root = tmp_path / "repo"
    repo = luks_repo(bsettings, root, key)
    ids, saved = [], []
    for n in range(4):
        if n:
            rewrite(vm, tmp_path, n * 2 * MiB, seed=n)
        ids.append(backup(bsettings, "vm1", repo))
        saved.append(save(vm, tmp_path / f"saved-{n}.qcow2"))
    assert [point(bsettings, i).backup_type for i in ids] == [
        "full",
        "incremental",
        "incremental",
        "incremental",
    ]
    fingerprint = keys.load(key).fingerprint
    for n, backup_id in enumerate(ids):
        assert point(bsettings, backup_id).key_fingerprint == fingerprint
        assert same_as(bsettings, backup_id, saved[n]), n
        info = qemu_img.info(image(bsettings, backup_id), "qcow2")
        assert info["encrypted"] is True
        assert info["format-specific"]["data"]["encrypt"]["format"] == "luks"
        side = chains.repo_files.read_sidecar(chains.repo_files.sidecar_path(info_path(info)))
        assert side["encryption"] == {"format": "luks", "key_fingerprint": fingerprint}
        assert side["compression"] is None
    head = opened(bsettings, ids[-1])
    checked = qemu_img.check(
        head.crypt.source(head.image), "qcow2", objects=head.crypt.key.objects()
    )  # type: ignore[union-attr]
    assert checked["result"] == "clean"
    # Nothing of the guest's data is readable in the repository or the temp dir.
    assert has_marker(root, bsettings.temp_dir) == []
    # Plain QEMU restores the head without diskvault, given the key file.
    layers = ",".join(
        ["encrypt.key-secret=s"] + [f"{'backing.' * d}encrypt.key-secret=s" for d in range(1, 4)]
    )
    out = tmp_path / "plain.raw"
    subprocess.run(
        [
            "qemu-img",
            "convert",
            "--object",
            f"secret,id=s,file={key}",
            "--image-opts",
            f"driver=qcow2,file.filename={head.image},{layers}",
            "-O",
            "raw",
            str(out),
        ],
        check=True,
        timeout=120,
    )
    assert qemu_img.compare(out, saved[-1], "raw", "qcow2")
    assert MARKER in out.read_bytes()

    # Verify, restore to a file through the job code, and delete a middle point.
    with session_scope(bsettings.DATABASE_URL) as s:
        result = verify.verify(s, bsettings, s.get(Backup, ids[-1]))
    assert result["status"] == "ok", result
    rp = opened(bsettings, ids[2])
    dest = tmp_path / "restored.qcow2"
    restore.to_file(bsettings, rp.id, rp.image, dest, "qcow2", crypt=rp.crypt)
    assert qemu_img.compare(dest, saved[2], "qcow2", "qcow2")
    with session_scope(bsettings.DATABASE_URL) as s:
        chains.delete_point(s, bsettings, s.get(Backup, ids[1]))
    for n in (0, 2, 3):
        assert same_as(bsettings, ids[n], saved[n]), n
    # Consolidation: the full is merged forward until two points are left.
    with session_scope(bsettings.DATABASE_URL) as s:
        chain = s.get(chains.BackupChain, point(bsettings, ids[3]).chain_id)
        removed, why = chains.consolidate(s, bsettings, chain, 2)
    assert why is None and removed == [ids[0]]
    for n in (2, 3):
        assert same_as(bsettings, ids[n], saved[n]), n
        with session_scope(bsettings.DATABASE_URL) as s:
            assert verify.verify(s, bsettings, s.get(Backup, ids[n]))["status"] == "ok"
    assert has_marker(root, bsettings.temp_dir) == []


def info_path(info: dict[str, object]) -> Path:
    return Path(str(info["filename"]))


def test_wrong_or_missing_key_is_refused_and_nothing_is_written(
    bsettings: Settings, tmp_path: Path, vm: Path, key: Path
) -> None:
    root = tmp_path / "repo"
    repo = luks_repo(bsettings, root, key)
    first = backup(bsettings, "vm1", repo)
    fingerprint = keys.load(key).fingerprint
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    good = key.read_bytes()
    key.chmod(0o600)
    key.write_bytes(b"f" * 64)  # another key in its place
    with pytest.raises(KeyUnavailable, match=fingerprint):
        backup(bsettings, "vm1", repo)
    with pytest.raises(KeyUnavailable, match=fingerprint):
        opened(bsettings, first)
    with session_scope(bsettings.DATABASE_URL) as s, pytest.raises(KeyUnavailable):
        verify.verify(s, bsettings, s.get(Backup, first))
    key.unlink()
    with pytest.raises(KeyUnavailable, match=f"{fingerprint}.*No such file"):
        opened(bsettings, first)
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
    assert has_marker(root, bsettings.temp_dir) == []
    # Straight qemu-img with a wrong key: refused, and no output file.
    wrong = tmp_path / "wrong.key"
    wrong.write_bytes(b"0" * 64)
    out = tmp_path / "out.raw"
    proc = subprocess.run(
        [
            "qemu-img",
            "convert",
            "--object",
            f"secret,id=s,file={wrong}",
            "--image-opts",
            f"driver=qcow2,file.filename={image(bsettings, first)},encrypt.key-secret=s",
            "-O",
            "raw",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0 and "Invalid password" in proc.stderr and not out.exists()
    key.write_bytes(good)
    key.chmod(0o600)
    assert point(bsettings, backup(bsettings, "vm1", repo)).backup_type == "incremental"


def test_rekey_starts_a_new_chain_and_old_points_stay_readable(
    bsettings: Settings, tmp_path: Path, vm: Path, key: Path
) -> None:
    repo = luks_repo(bsettings, tmp_path / "repo", key)
    old = backup(bsettings, "vm1", repo)
    saved_old = save(vm, tmp_path / "old.qcow2")
    with session_scope(bsettings.DATABASE_URL) as s:
        row = s.get(BackupRepository, repo)
        with pytest.raises(EncryptionLocked, match="rekey"):
            keys.update_repository(s, bsettings, row, {"encryption": "none"})
        with pytest.raises(EncryptionLocked):
            keys.update_repository(s, bsettings, row, {"key_file": str(key)})
        row = s.get(BackupRepository, repo)
        assert row.encryption == "luks"
        keys.rekey(s, bsettings, row, str(tmp_path / "new.key"), True)
        assert row.keys == [{"fingerprint": keys.load(key).fingerprint, "key_file": str(key)}]
    rewrite(vm, tmp_path, 3 * MiB, seed=9)
    new = backup(bsettings, "vm1", repo)
    row_new = point(bsettings, new)
    assert row_new.backup_type == "full" and "key changed" in (row_new.reason or "")
    assert row_new.key_fingerprint == keys.load(tmp_path / "new.key").fingerprint
    assert same_as(bsettings, old, saved_old)
    assert same_as(bsettings, new, vm)
    assert point(bsettings, backup(bsettings, "vm1", repo)).backup_type == "incremental"


def test_compressed_chain_verify_and_copy(
    bsettings: Settings, tmp_path: Path, vm: Path, key: Path
) -> None:
    plain = add_repo(bsettings, "zst", tmp_path / "zst", compression="zstd")
    secure = luks_repo(bsettings, tmp_path / "secure", key)
    offsite = add_repo(bsettings, "offsite", tmp_path / "offsite")
    ids = {plain: [], secure: []}  # type: dict[str, list[str]]
    for n in range(3):
        if n:
            rewrite(vm, tmp_path, n * MiB, seed=n)
        for repo in ids:
            ids[repo].append(backup(bsettings, "vm1", repo))
    for backup_id in ids[plain]:
        path = image(bsettings, backup_id)
        checked = qemu_img.check(path, "qcow2")
        assert checked["result"] == "clean" and checked["compressed-clusters"] > 0
    assert qemu_img.compare(image(bsettings, ids[plain][-1]), vm, "qcow2", "qcow2")
    for repo, points in ids.items():
        with session_scope(bsettings.DATABASE_URL) as s:
            assert verify.verify(s, bsettings, s.get(Backup, points[-1]))["status"] == "ok"
            rows = copies.points_to_copy(s, repo, "vm1")
            src, dst = s.get(BackupRepository, repo), s.get(BackupRepository, offsite)
            done = copies.copy(s, bsettings, src, dst, rows)
        assert sorted(done["copied"]) == sorted(points)
    # The copies are byte-identical, so the encrypted ones stay encrypted.
    copied = [p for p in (tmp_path / "offsite").rglob("*.qcow2")]
    assert len(copied) == 3  # the second repository's copy mirrors the same paths
    assert all(qemu_img.info(p, "qcow2").get("encrypted") for p in copied)
    assert has_marker(tmp_path / "offsite", tmp_path / "secure") == []


def test_killed_worker_leaves_no_plaintext(
    bsettings: Settings, tmp_path: Path, vm: Path, key: Path
) -> None:
    """A throttled encrypted backup in a child process, SIGKILLed mid-copy."""
    root = tmp_path / "repo"
    repo = luks_repo(bsettings, root, key)
    script = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parents[1])!r})
from diskvault.config import load_settings
from support.backups_env import backup
settings = load_settings(DATA_DIR={str(bsettings.DATA_DIR)!r}, WORKERS=0)
backup(settings, "vm1", {repo!r}, speed=2 * 1024 * 1024)
"""
    child = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = 60.0
        import time

        start = time.monotonic()
        while not list(root.rglob("*.partial")) and time.monotonic() - start < deadline:
            assert child.poll() is None, "the backup ended before it could be killed"
            time.sleep(0.05)
        time.sleep(1.0)  # some megabytes into the copy
        partials = list(root.rglob("*.partial"))
        assert partials and partials[0].stat().st_size > 0
    finally:
        child.kill()
        child.wait(10)
        # Its qemu-storage-daemon outlives it (own session), as after a real crash.
        stop_stale(bsettings.temp_dir / "backup-work" / "vm1-disk0")
    assert has_marker(root, bsettings.temp_dir) == []
    assert qemu_img.info(partials[0], "qcow2", force_share=True)["encrypted"] is True


def test_compressed_raw_source_chain(bsettings: Settings, tmp_path: Path, vm: Path) -> None:
    """A raw source writes through the FUSE view: a compress filter node stores its
    clusters compressed, the incremental's too."""
    raw = tmp_path / "vm2.raw"
    qemu_img.convert(vm, "qcow2", raw, "raw")
    add_source(bsettings, "vm2", "raw", path=str(raw))
    repo = add_repo(bsettings, "zst", tmp_path / "zst", compression="zstd")
    first = backup(bsettings, "vm2", repo)
    saved = save(raw, tmp_path / "saved.raw")
    qemu_io.run(raw, "raw", [f"write -P 5 {3 * MiB} {2 * MiB}", f"write -z {9 * MiB} 65536"])
    second = backup(bsettings, "vm2", repo)
    assert point(bsettings, second).backup_type == "incremental"
    assert qemu_img.compare(image(bsettings, first), saved, "qcow2", "raw")
    assert qemu_img.compare(image(bsettings, second), raw, "qcow2", "raw")
    for backup_id in (first, second):
        checked = qemu_img.check(image(bsettings, backup_id), "qcow2")
        assert checked["result"] == "clean" and checked["compressed-clusters"] > 0
    # Unencrypted, the hash map holds plain hashes (an encrypted repository's are keyed).
    plain_zero = xxhash.xxh3_128_digest(bytes(64 * 1024))
    assert plain_zero in (tmp_path / "zst").rglob("*.hashmap").__next__().read_bytes()


def test_encrypted_nbd_source_chain_and_restore_to_nbd(
    bsettings: Settings, tmp_path: Path, key: Path
) -> None:
    """An NBD source's incremental writes dirty extents through the FUSE view of a
    target opened on its encrypted chain; the point restores onto an NBD export."""
    disk = marked_disk(tmp_path / "nvm.qcow2", tmp_path, SIZE)
    qemu_img.bitmap(disk, "b0", "add")
    sock = tmp_path / "nbd.sock"
    add_source(bsettings, "nvm", "nbd", unverified=True, url=url(sock), bitmap="b0")
    repo = luks_repo(bsettings, tmp_path / "repo", key)
    with qemu_nbd(disk, sock, bitmap="b0"):
        backup(bsettings, "nvm", repo)
        qemu_io.run(url(sock), "raw", [f"write -P 7 {MiB} {MiB}", f"write -z {5 * MiB} 65536"])
        second = backup(bsettings, "nvm", repo)
    assert point(bsettings, second).backup_type == "incremental"
    assert same_as(bsettings, second, disk)
    assert has_marker(tmp_path / "repo", bsettings.temp_dir) == []
    target = tmp_path / "target.qcow2"
    qemu_img.create(target, "qcow2", SIZE)
    qemu_io.run(target, "qcow2", [f"write -P 3 0 {SIZE}"])  # old data that must go
    rp = opened(bsettings, second)
    bsettings.BACKUP_RESTORE_NBD_TARGETS = [str(tmp_path / "restore.sock")]
    with qemu_nbd(target, tmp_path / "restore.sock"):
        out = restore.to_nbd(
            bsettings,
            rp.id,
            rp.image,
            url(tmp_path / "restore.sock"),
            virtual_size=SIZE,
            workdir=tmp_path / "work",
            crypt=rp.crypt,
        )
    assert out["verified"] and qemu_img.compare(target, disk, "qcow2", "qcow2")


def test_policy_compression(bsettings: Settings, tmp_path: Path, vm: Path, key: Path) -> None:
    """A policy's compression overrides its plain repository's; on an encrypted one
    it is refused."""
    plain = add_repo(bsettings, "plain", tmp_path / "plain")
    luks_repo(bsettings, tmp_path / "secure", key)
    body = {"name": "zst", "sources": ["vm1"], "repository": "plain", "compression": "zstd"}
    with session_scope(bsettings.DATABASE_URL) as s:
        assert policies.create(s, bsettings, body)[0].compression == "zstd"
        with pytest.raises(InvalidRepository, match="unencrypted"):
            policies.create(s, bsettings, body | {"name": "bad", "repository": "secure"})
    unpacked = backup(bsettings, "vm1", plain, "full")
    packed = backup(bsettings, "vm1", plain, "full", compression="zstd")
    assert qemu_img.check(image(bsettings, unpacked), "qcow2").get("compressed-clusters", 0) == 0
    assert qemu_img.check(image(bsettings, packed), "qcow2")["compressed-clusters"] > 0
    assert qemu_img.compare(image(bsettings, packed), vm, "qcow2", "qcow2")
