"""Second copies (local and S3), re-attaching a repository, and whole-disk restore."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from diskvault.backups import chain as chains
from diskvault.backups import copy as copies
from diskvault.backups import repositories, restore, service
from diskvault.backups.errors import (
    InvalidRestoreTarget,
    NbdTargetUnavailable,
    RestoreTargetRefused,
)
from diskvault.backups.models import Backup, BackupRepository, RepositoryKind
from diskvault.config import Settings
from diskvault.db.engine import session_scope
from diskvault.storage import provider_from_url
from diskvault.tools import qemu_img
from support.backups_env import (
    DISK,
    add_repo,
    add_source,
    backup,
    create_disk,
    image,
    make_settings,
    same,
    save,
    write_random,
)
from support.backups_servers import qemu_nbd, url
from support.server import free_port


@pytest.fixture
def chain3(bsettings: Settings, repo: str, tmp_path: Path) -> list[tuple[str, Path]]:
    disk = create_disk(tmp_path / "vm.qcow2")
    add_source(bsettings, "vm1", "qcow2", disks=[str(disk)])
    saved = []
    for n in range(3):
        saved.append((backup(bsettings, "vm1", repo), save(disk, tmp_path / f"at-{n}.qcow2")))
        write_random(disk, "qcow2", 0.05, seed=400 + n)
    return saved


def run_copy(settings: Settings, source: str, target: str) -> dict[str, object]:
    with session_scope(settings.DATABASE_URL) as s:
        src, dst = s.get(BackupRepository, source), s.get(BackupRepository, target)
        assert src is not None and dst is not None
        return copies.copy(s, settings, src, dst, copies.points_to_copy(s, source, None))


def test_copy_to_local_then_attach_to_fresh_diskvault(
    bsettings: Settings, repo: str, tmp_path: Path, chain3: list[tuple[str, Path]]
) -> None:
    second = add_repo(bsettings, "second", tmp_path / "second")
    first = run_copy(bsettings, repo, second)
    assert first["copied"] == [i for i, _ in chain3] and first["skipped"] == []
    assert run_copy(bsettings, repo, second)["copied"] == []
    # Deleting a middle point rewrites its child: the next copy sends that child again.
    with session_scope(bsettings.DATABASE_URL) as s:
        chains.delete_point(s, bsettings, s.get(Backup, chain3[1][0]))
    again = run_copy(bsettings, repo, second)
    assert again["copied"] == [chain3[2][0]] and again["skipped"] == [chain3[0][0]]
    assert again["removed"] == [chain3[1][0]]

    fresh = make_settings(tmp_path / "fresh")
    with session_scope(fresh.DATABASE_URL) as s:
        attached = repositories.create_repository(
            s,
            fresh,
            name="attached",
            kind=RepositoryKind.local,
            path=str(tmp_path / "second"),
            url=None,
        )
        found = repositories.rescan(s, attached)
        view = service.chain_view(s, "vm1", attached.id)
    assert found["added"] == 2 and found["chains"] == 1
    points = view["chains"][0]["points"]
    assert [p["id"] for p in points] == [chain3[0][0], chain3[2][0]]
    for backup_id, copy in (chain3[0], chain3[2]):
        assert same(image(fresh, backup_id), copy)


def test_copy_to_s3_verified_and_incremental(
    bsettings: Settings, repo: str, chain3: list[tuple[str, Path]], moto_url: str
) -> None:
    with session_scope(bsettings.DATABASE_URL) as s:
        target = repositories.create_repository(
            s, bsettings, name="offsite", kind=RepositoryKind.s3, path=None, url=moto_url
        ).id
    done = run_copy(bsettings, repo, target)
    assert len(done["copied"]) == 3
    provider = provider_from_url(moto_url)
    rel = image(bsettings, chain3[2][0]).relative_to(image(bsettings, chain3[0][0]).parents[2])
    assert provider.stat(rel.as_posix()).size == image(bsettings, chain3[2][0]).stat().st_size
    assert provider.exists(rel.with_suffix(".json").as_posix())
    assert run_copy(bsettings, repo, target)["skipped"] == [i for i, _ in chain3]


@pytest.mark.parametrize("fmt", ["raw", "qcow2", "vmdk"])
def test_restore_to_file(
    bsettings: Settings, chain3: list[tuple[str, Path]], tmp_path: Path, fmt: str
) -> None:
    backup_id, copy = chain3[1]
    root = bsettings.DATA_DIR / "restores"  # the default root, made at start-up
    dest = restore.check_destination(bsettings, str(root / f"restored.{fmt}"))
    seen: list[float] = []
    out = restore.to_file(
        bsettings, backup_id, image(bsettings, backup_id), dest, fmt, progress=seen.append
    )
    assert out["verified"] and same(dest, copy, fmt, "qcow2")
    assert "backing-filename" not in qemu_img.info(dest, fmt)
    with pytest.raises(InvalidRestoreTarget, match="already exists"):
        restore.check_destination(bsettings, str(dest))


def test_restore_to_nbd_overwrites_everything(
    bsettings: Settings, chain3: list[tuple[str, Path]], tmp_path: Path
) -> None:
    backup_id, copy = chain3[2]
    target = tmp_path / "target.qcow2"
    qemu_img.create(target, "qcow2", DISK)
    write_random(target, "qcow2", 0.5, seed=9)  # old data that must not survive
    sock = tmp_path / "restore.sock"
    bsettings.BACKUP_RESTORE_NBD_TARGETS = [str(sock)]
    with qemu_nbd(target, sock):
        out = restore.to_nbd(
            bsettings,
            backup_id,
            image(bsettings, backup_id),
            url(sock),
            virtual_size=DISK,
            workdir=tmp_path / "work",
        )
    assert out["verified"] and same(target, copy)


def test_restore_point_for_other_domains(
    bsettings: Settings, chain3: list[tuple[str, Path]]
) -> None:
    with session_scope(bsettings.DATABASE_URL) as s:
        rp = service.restore_point(s, chain3[2][0])
    assert rp.format == "qcow2" and rp.virtual_size == DISK
    assert [p.name for p in rp.chain][-1] == rp.image.name and len(rp.chain) == 3
    assert rp.chain[0].name.startswith("full-")


def test_restore_paths_outside_the_roots_are_refused(bsettings: Settings, tmp_path: Path) -> None:
    """An operator cannot make root write files anywhere (no roots set: DATA_DIR/restores)."""
    root = bsettings.DATA_DIR / "restores"
    assert bsettings.restore_roots == [bsettings.DATA_DIR / "restores"] and root.is_dir()
    (root / "sub").mkdir()
    (root / "out").symlink_to(tmp_path)
    (root / "evil.qcow2").symlink_to(tmp_path / "evil.qcow2")
    for raw in [
        str(tmp_path / "anywhere.qcow2"),
        "/etc/cron.d/x",
        f"{root}/../escaped.qcow2",
        f"{root}/sub/../../escaped.qcow2",
        f"{root}/out/through-a-symlink.qcow2",
    ]:
        with pytest.raises(RestoreTargetRefused) as caught:
            restore.check_destination(bsettings, raw)
        assert caught.value.status == 403
        assert "DISKVAULT_BACKUP_RESTORE_ROOTS" in caught.value.message
    with pytest.raises(InvalidRestoreTarget, match="already exists"):
        restore.check_destination(bsettings, str(root / "evil.qcow2"))  # a dangling link
    with pytest.raises(InvalidRestoreTarget, match="NUL"):
        restore.check_destination(bsettings, f"{root}/a\0b")
    assert restore.check_destination(bsettings, f"{root}/sub/../ok.qcow2") == root / "ok.qcow2"
    assert sorted(p.name for p in tmp_path.iterdir() if "escaped" in p.name) == []
    bsettings.BACKUP_RESTORE_ROOTS = []
    with pytest.raises(RestoreTargetRefused, match="none are configured"):
        restore.check_destination(bsettings, str(root / "new.qcow2"))


def test_nbd_targets_must_be_allowed_and_fail_alike(
    bsettings: Settings, chain3: list[tuple[str, Path]], tmp_path: Path
) -> None:
    backup_id = chain3[2][0]

    def attempt(url: str) -> None:
        restore.to_nbd(
            bsettings,
            backup_id,
            image(bsettings, backup_id),
            url,
            virtual_size=DISK,
            workdir=tmp_path / "work",
        )

    with pytest.raises(RestoreTargetRefused, match="none are configured") as caught:
        attempt("nbd://127.0.0.1:22/x")
    assert caught.value.fields["setting"] == "DISKVAULT_BACKUP_RESTORE_NBD_TARGETS"
    with socket.socket() as closed, socket.socket() as silent:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connection refused
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # accepts, never speaks NBD: the connect timeout
        ports = [closed.getsockname()[1], silent.getsockname()[1]]
        bsettings.BACKUP_RESTORE_NBD_TARGETS = [f"127.0.0.1:{p}" for p in ports]
        bsettings.BACKUP_RESTORE_NBD_TIMEOUT_S = 1.0
        with pytest.raises(RestoreTargetRefused, match="not an allowed restore target"):
            attempt("nbd://127.0.0.1:1/x")
        messages = []
        for port in ports:
            with pytest.raises(NbdTargetUnavailable) as failed:
                attempt(f"nbd://127.0.0.1:{port}/x")
            messages.append(failed.value.message.replace(str(port), "PORT"))
    assert messages[0] == messages[1] and "within 1 s" in messages[0]
    assert not (tmp_path / "work").exists()


def test_restore_to_an_allowed_tcp_nbd_server(
    bsettings: Settings, chain3: list[tuple[str, Path]], tmp_path: Path
) -> None:
    backup_id, copy = chain3[0]
    target = tmp_path / "target.qcow2"
    qemu_img.create(target, "qcow2", DISK)
    port = free_port()
    bsettings.BACKUP_RESTORE_NBD_TARGETS = [f"127.0.0.1:{port}"]
    with qemu_nbd(target, tmp_path / "unused.sock", tcp_port=port):
        out = restore.to_nbd(
            bsettings,
            backup_id,
            image(bsettings, backup_id),
            f"nbd://127.0.0.1:{port}/vm",
            virtual_size=DISK,
            workdir=tmp_path / "work",
        )
    assert out["verified"] and same(target, copy)


@pytest.mark.parametrize(
    ("entry", "url"),
    [
        ("nbd.lan:10810", "nbd://NBD.lan:10810/disk"),
        ("nbd.lan", "nbd://nbd.lan/disk"),
        ("[::1]:10810", "nbd://[::1]:10810/disk"),
        ("[::1]", "nbd://[::1]/disk"),
        ("::1", "nbd://[::1]:10809/disk"),
        ("/run/nbd/../nbd/restore.sock", "nbd+unix:///disk?socket=/run/nbd/restore.sock"),
    ],
)
def test_nbd_allowlist_entries(bsettings: Settings, entry: str, url: str) -> None:
    bsettings.BACKUP_RESTORE_NBD_TARGETS = [entry]
    restore.check_nbd_target(bsettings, url)
    for other in ("nbd://nbd.lan:10811/disk", "nbd://[::2]/disk", "nbd+unix:///d?socket=/x"):
        if other != url:
            with pytest.raises(RestoreTargetRefused):
                restore.check_nbd_target(bsettings, other)
