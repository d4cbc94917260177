"""A libvirt source against a real libvirtd with a small TCG domain that never boots:
the guest "writes" through QEMU's own qemu-io on the disk device's backend."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from diskvault.backups.models import BackupType
from diskvault.backups.sources.libvirt import SHARE_ROOT
from diskvault.config import Settings
from diskvault.tools import qemu_img
from support import qemu_io
from support.backups_env import (
    add_repo,
    add_source,
    backup,
    create_disk,
    image,
    point,
    random_writes,
    same,
    save,
)
from support.crypto_env import has_marker, make_key, marked_disk, same_as

URI = "qemu:///system"
MiB = 1024 * 1024
SIZE = 32 * MiB
BACKEND = "/machine/peripheral/virtio-disk0/virtio-backend"


def grp_exists(name: str) -> bool:
    import grp

    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def virsh(*args: str) -> str:
    out = subprocess.run(["virsh", "-c", URI, *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture(scope="module")
def libvirtd() -> None:
    """libvirtd (and virtlogd) running, started here when installed but not running."""
    if shutil.which("libvirtd") is None:
        pytest.skip("libvirt-daemon-system is not installed")
    kvm = Path("/dev/kvm")
    if kvm.exists() and kvm.stat().st_gid == 0 and grp_exists("kvm"):
        # Without udev, /dev/kvm stays root:root 0600 and libvirt re-probes QEMU on every
        # call (~50 s per domain start); this is what Debian's udev rule would set.
        shutil.chown(kvm, group="kvm")
        kvm.chmod(0o660)
    probe = ["virsh", "-c", URI, "version"]
    if subprocess.run(probe, capture_output=True, timeout=30).returncode != 0:
        subprocess.run(["virtlogd", "-d"], check=False, timeout=30)
        subprocess.run(["libvirtd", "-d"], check=False, timeout=30)
        for _ in range(50):
            if subprocess.run(probe, capture_output=True, timeout=30).returncode == 0:
                break
            subprocess.run(["sleep", "0.2"], check=False)
        else:
            pytest.skip("libvirtd does not start here")


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A directory the domain's QEMU user can reach (pytest's tmp dirs are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="dv-libvirt-", dir="/var/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def domain(libvirtd: None, workdir: Path) -> Iterator[tuple[str, Path]]:
    disk = create_disk(workdir / "d0.qcow2", size=SIZE)
    with running(disk) as name:
        yield name, save(disk, workdir / "shadow.qcow2")  # the same writes, applied offline


@contextlib.contextmanager
def running(disk: Path) -> Iterator[str]:
    workdir = disk.parent
    name = f"dv-test-{uuid.uuid4().hex[:8]}"
    xml = workdir / "domain.xml"
    xml.write_text(
        f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
        "<os><type arch='x86_64' machine='pc'>hvm</type></os><devices>"
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
        f"<source file='{disk}'/><target dev='vda' bus='virtio'/></disk>"
        "</devices></domain>"
    )
    virsh("create", str(xml))
    try:
        yield name
    finally:
        subprocess.run(["virsh", "-c", URI, "destroy", name], capture_output=True, timeout=60)


def guest_write(name: str, shadow: Path, seed: int, fraction: float = 0.05) -> None:
    commands = random_writes(fraction, seed=seed, size=SIZE)
    for command in commands:
        virsh("qemu-monitor-command", name, "--hmp", f'qemu-io -d {BACKEND} "{command}"')
    qemu_io.run(shadow, "qcow2", commands)


def test_libvirt_checkpoints_full_and_incrementals(
    bsettings: Settings, workdir: Path, domain: tuple[str, Path], tmp_path: Path
) -> None:
    name, shadow = domain
    repo = add_repo(bsettings, "lv", workdir / "repo")
    add_source(bsettings, "lvm", "libvirt", domain=name)
    full = backup(bsettings, "lvm", repo)
    at_full = save(shadow, tmp_path / "at-full.qcow2")
    guest_write(name, shadow, seed=1)
    inc1 = backup(bsettings, "lvm", repo)
    at_inc1 = save(shadow, tmp_path / "at-inc1.qcow2")
    guest_write(name, shadow, seed=2)
    inc2 = backup(bsettings, "lvm", repo)
    at_inc2 = save(shadow, tmp_path / "at-inc2.qcow2")
    rows = [point(bsettings, i) for i in (full, inc1, inc2)]
    assert [r.backup_type for r in rows] == [
        BackupType.full,
        BackupType.incremental,
        BackupType.incremental,
    ]
    for backup_id, copy in ((full, at_full), (inc1, at_inc1), (inc2, at_inc2)):
        assert same(image(bsettings, backup_id), copy), backup_id
    assert rows[1].bytes_transferred < 0.2 * SIZE
    assert virsh("checkpoint-list", name, "--name").split() == [f"dv-{inc2}"]
    # A checkpoint deleted behind diskvault's back makes the next run a full.
    virsh("checkpoint-delete", name, f"dv-{inc2}")
    guest_write(name, shadow, seed=3)
    nxt = point(bsettings, backup(bsettings, "lvm", repo))
    assert nxt.backup_type == BackupType.full and "checkpoint" in (nxt.reason or "")
    assert same(image(bsettings, nxt.id), shadow)


@pytest.mark.parametrize("storage", ["luks", "zstd"])
def test_libvirt_into_encrypting_and_compressing_repositories(
    bsettings: Settings, libvirtd: None, workdir: Path, tmp_path: Path, storage: str
) -> None:
    """Pull mode: diskvault's own QEMU writes the points, so a libvirt domain gets the
    repository's encryption or compression like any other source, and the repository
    never has to be reachable by the domain's QEMU user."""
    disk = marked_disk(workdir / "d0.qcow2", tmp_path, SIZE)
    shadow = save(disk, workdir / "shadow.qcow2")
    root = tmp_path / "repo"  # pytest's tmp dirs are 0700 root: QEMU's user cannot reach it
    if storage == "luks":
        key = make_key(tmp_path / "repo.key")
        repo = add_repo(bsettings, "lv", root, encryption="luks", key_file=str(key))
    else:
        repo = add_repo(bsettings, "lv", root, compression="zstd")
    with running(disk) as name:
        add_source(bsettings, "lvm", "libvirt", domain=name)
        ids, saved = [], []
        for n in range(3):
            if n:
                guest_write(name, shadow, seed=n)
            ids.append(backup(bsettings, "lvm", repo))
            saved.append(save(shadow, tmp_path / f"saved-{n}.qcow2"))
        assert virsh("checkpoint-list", name, "--name").split() == [f"dv-{ids[-1]}"]
    rows = [point(bsettings, i) for i in ids]
    assert [r.backup_type for r in rows] == ["full", "incremental", "incremental"]
    assert rows[1].bytes_transferred < 0.2 * SIZE
    for backup_id, copy in zip(ids, saved, strict=True):
        info = qemu_img.info(image(bsettings, backup_id), "qcow2")
        if storage == "luks":
            assert info["encrypted"] is True and same_as(bsettings, backup_id, copy)
        else:
            assert info["format-specific"]["data"]["compression-type"] == "zstd"
            assert same(image(bsettings, backup_id), copy), backup_id
    if storage == "zstd":
        for backup_id in ids:
            assert qemu_img.check(image(bsettings, backup_id), "qcow2")["compressed-clusters"] > 0
    assert (has_marker(root, bsettings.temp_dir) == []) == (storage == "luks")
    assert not list(Path(SHARE_ROOT).glob("diskvault-*")), "socket and scratch dirs are removed"


def test_a_pull_job_left_by_a_killed_worker_is_ended(
    bsettings: Settings, workdir: Path, domain: tuple[str, Path], tmp_path: Path
) -> None:
    name, shadow = domain
    stale = Path(tempfile.mkdtemp(prefix="diskvault-stale-", dir=SHARE_ROOT))
    shutil.chown(stale, "libvirt-qemu", "libvirt-qemu")
    xml = tmp_path / "backup.xml"
    xml.write_text(
        "<domainbackup mode='pull'>"
        f"<server transport='unix' socket='{stale}/nbd.sock'/>"
        f"<disks><disk name='vda' type='file'><scratch file='{stale}/s.qcow2'/></disk></disks>"
        "</domainbackup>"
    )
    virsh("backup-begin", name, str(xml))
    repo = add_repo(bsettings, "lv", tmp_path / "repo")
    add_source(bsettings, "lvm", "libvirt", domain=name)
    assert same(image(bsettings, backup(bsettings, "lvm", repo)), shadow)
    assert not stale.exists(), "the stale job's socket and scratch directory is removed"
