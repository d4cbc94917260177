#!/usr/bin/env python3
"""Backups: diskvault full and incremental runs against ``qemu-img convert`` and
virtnbdbackup, on one qcow2 disk (default 4 GiB, 60% random data), in one run.

Rows (ratios are the goals' direction: higher is better for the first two):

- full throughput: ``qemu-img convert -O qcow2`` time / diskvault full time (>= 0.9x).
  diskvault's time includes checksumming the new file and flushing it to disk (a
  backup that is still in the page cache is not a backup); convert flushes nothing
  (its default cache mode is ``unsafe``), so a second row adds ``sync -f`` of its
  output to the baseline.
- full vs virtnbdbackup: the same libvirt domain, ``virtnbdbackup -l full`` time /
  diskvault (libvirt source) full time (>= 1.0x); skipped when libvirtd does not run.
- incremental bytes: bytes the incremental file took / bytes changed (<= 1.1x),
  after 5% of the disk was rewritten in 1 MiB blocks.
- incremental time: incremental time / full time (<= 0.15x).
- 5 concurrent fulls: aggregate throughput of 5 fulls of 1/4-size disks at once /
  one such full alone (reported).

Caches are dropped before each timed run (root), unless ``--warm``; times are
medians of ``--repeat`` rounds, each round running convert, convert+sync and a
diskvault full in turn (each incremental after a fresh 5% rewrite).

    sudo .venv/bin/python bench/backup.py                 # 4 GiB
    sudo .venv/bin/python bench/backup.py --size-gib 1 --warm
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import Table, drop_caches, fmt_bytes, ratio, run, timer

from diskvault.backups import engine, repositories, service
from diskvault.backups.locks import local_holder
from diskvault.backups.models import Backup, RepositoryKind, SourceKind
from diskvault.config import Settings, load_settings
from diskvault.db.engine import session_scope
from diskvault.db.migrate import upgrade
from diskvault.logging import configure

MiB = 1024 * 1024
GiB = 1024 * MiB
SEED = 20261121
URI = "qemu:///system"


def make_disk(path: Path, size: int, fill: float, seed: int) -> Path:
    """A qcow2 with ``fill`` of its MiB blocks random (reused when already there)."""
    if path.exists():
        return path
    raw = path.with_suffix(".raw")
    rng = random.Random(seed)
    with open(raw, "wb") as fh:
        fh.truncate(size)
        for block in sorted(rng.sample(range(size // MiB), int(size // MiB * fill))):
            fh.seek(block * MiB)
            fh.write(rng.randbytes(MiB))
    run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, path])
    raw.unlink()
    return path


def rewrite(path: Path, size: int, share: float, seed: int) -> int:
    """Rewrite ``share`` of the disk in whole 1 MiB blocks; returns the bytes changed."""
    rng = random.Random(seed)
    blocks = rng.sample(range(size // MiB), int(size // MiB * share))
    commands = []
    for block in blocks:
        commands += ["-c", f"write -P {rng.randrange(1, 256)} {block * MiB} {MiB}"]
    run(["qemu-io", "-f", "qcow2", *commands, path])
    return len(blocks) * MiB


def timed_cold(warm: bool, fn: Callable[[], object]) -> float:
    cold(warm)
    with timer() as t:
        fn()
    return t.seconds


def cold(warm: bool) -> None:
    """Start each timed run from clean caches: dropped (root), or at least written back.
    The tools' binaries are read back in, as on a server that runs them all day."""
    if not warm and os.geteuid() == 0:
        drop_caches()
        for tool in ("qemu-img", "qemu-storage-daemon", "qemu-io"):
            subprocess.run([tool, "--version"], capture_output=True, timeout=60, check=False)
    else:
        os.sync()


class Vault:
    """diskvault's backup engine in-process, on its own SQLite DB and repository."""

    def __init__(self, work: Path) -> None:
        self.settings: Settings = load_settings(DATA_DIR=work / "data", WORKERS=0)
        upgrade(self.settings.DATABASE_URL)
        with session_scope(self.settings.DATABASE_URL) as s:
            repo = repositories.create_repository(
                s,
                self.settings,
                name="bench",
                kind=RepositoryKind.local,
                path=str(work / "repo"),
                url=None,
            )
            self.repo = repo.id

    def source(self, name: str, kind: str, **config: object) -> None:
        with session_scope(self.settings.DATABASE_URL) as s:
            service.create_source(s, name, SourceKind(kind), dict(config))

    def backup(self, name: str, kind: str = "auto") -> tuple[Backup, float]:
        req = engine.RunRequest(name, self.repo, kind, holder=local_holder(self.settings))
        with timer() as t:
            (point_id,) = engine.run(self.settings, req)
        with session_scope(self.settings.DATABASE_URL) as s:
            row = s.get(Backup, point_id)
            assert row is not None
            s.expunge(row)
        return row, t.seconds

    @property
    def root(self) -> Path:
        with session_scope(self.settings.DATABASE_URL) as s:
            return Path(repositories.get_repository(s, self.settings, self.repo).path or "")


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def libvirt_ok() -> bool:
    if shutil.which("virtnbdbackup") is None:
        return False
    probe = subprocess.run(["virsh", "-c", URI, "version"], capture_output=True, timeout=30)
    return probe.returncode == 0


def bench_libvirt(vault: Vault, work: Path, disk: Path, warm: bool) -> tuple[float, float] | None:
    """virtnbdbackup and diskvault fulls of one domain running on a copy of ``disk``."""
    if not libvirt_ok():
        return None
    lvdir = work / "libvirt"
    shutil.rmtree(lvdir, ignore_errors=True)
    lvdir.mkdir(mode=0o755)
    os.chmod(work, 0o755)
    image = lvdir / "vda.qcow2"
    shutil.copyfile(disk, image)
    name = f"dv-bench-{uuid.uuid4().hex[:6]}"
    xml = lvdir / "domain.xml"
    xml.write_text(
        f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
        "<os><type arch='x86_64' machine='pc'>hvm</type></os><devices>"
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
        f"<source file='{image}'/><target dev='vda' bus='virtio'/></disk></devices></domain>"
    )
    run(["virsh", "-c", URI, "create", xml])
    try:
        out = lvdir / "virtnbdbackup"
        cold(warm)
        with timer() as t_vnb:
            run(["virtnbdbackup", "-d", name, "-l", "full", "-o", out, "-n"], timeout=7200)
        for cp in run(["virsh", "-c", URI, "checkpoint-list", name, "--name"]).stdout.split():
            run(["virsh", "-c", URI, "checkpoint-delete", name, cp, "--metadata"], check=False)
        vault.source(name, "libvirt", domain=name)
        cold(warm)
        _, t_dv = vault.backup(name, "full")
        return t_vnb.seconds, t_dv
    finally:
        run(["virsh", "-c", URI, "destroy", name], check=False)


def bench_concurrent(vault: Vault, work: Path, size: int, warm: bool) -> tuple[float, float]:
    """Throughput of one full of a ``size`` disk, and of five such fulls at once."""
    disks = [make_disk(work / f"c{n}.qcow2", size, 0.6, SEED + n) for n in range(6)]
    for n, disk in enumerate(disks):
        vault.source(f"c{n}", "qcow2", disks=[str(disk)])
    cold(warm)
    _, alone = vault.backup("c5", "full")
    cold(warm)
    with timer() as t, ThreadPoolExecutor(5) as pool:
        list(pool.map(lambda n: vault.backup(f"c{n}", "full"), range(5)))
    return size / alone, 5 * size / t.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-gib", type=float, default=4.0)
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/dv-bench-backup"))
    parser.add_argument("--warm", action="store_true", help="do not drop caches")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--repeat", type=int, default=3, help="median of this many runs")
    args = parser.parse_args()
    configure("WARNING", "console")
    size = int(args.size_gib * GiB)
    args.work.mkdir(parents=True, exist_ok=True)
    for stale in ("data", "repo", "convert.qcow2"):
        path = args.work / stale
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    disk = make_disk(args.work / f"disk-{args.size_gib:g}g.qcow2", size, 0.6, SEED)
    vault = Vault(args.work)

    converted = args.work / "convert.qcow2"
    convert = ["qemu-img", "convert", "-f", "qcow2", "-O", "qcow2", disk, converted]

    def plain() -> None:
        run(convert)

    def flushed() -> None:
        run(convert)
        run(["sync", "-f", converted])

    work_disk = args.work / "source.qcow2"
    shutil.copyfile(disk, work_disk)
    vault.source("vm", "qcow2", disks=[str(work_disk)])
    # Interleaved, so that drift in the machine's disk speed hits every tool alike.
    convs, durables, fulls = [], [], []
    for _ in range(args.repeat):
        converted.unlink(missing_ok=True)
        convs.append(timed_cold(args.warm, plain))
        converted.unlink()
        durables.append(timed_cold(args.warm, flushed))
        cold(args.warm)
        fulls.append(vault.backup("vm", "full"))
    converted.unlink()
    t_conv, t_durable = statistics.median(convs), statistics.median(durables)
    full, t_full = fulls[0][0], statistics.median(t for _, t in fulls)
    incs = []
    for n in range(args.repeat):
        changed = rewrite(work_disk, size, 0.05, SEED + 1 + n)
        cold(args.warm)
        inc, t_inc = vault.backup("vm", "incremental")
        assert inc.backup_type and inc.backup_type.value == "incremental", inc.reason
        incs.append((allocated(vault.root / (inc.path or "")), t_inc))
    inc_bytes, t_inc = (statistics.median(x) for x in zip(*incs, strict=True))
    check = run(["qemu-img", "compare", vault.root / (inc.path or ""), work_disk], check=False)
    libvirt = bench_libvirt(vault, args.work, disk, args.warm)
    one, five = bench_concurrent(vault, args.work, size // 4, args.warm)

    table = Table(
        ["measure", "diskvault", "baseline", "ratio", "goal"],
        title=f"backup of a {fmt_bytes(size)} qcow2, 60% random data",
    )
    table.add(
        "full backup time (s)",
        t_full,
        t_conv,
        ratio(t_conv, t_full),
        ">= 0.9x (convert / diskvault)",
    )
    table.add(
        "full, both flushed (s)",
        t_full,
        t_durable,
        ratio(t_durable, t_full),
        ">= 0.9x (convert+sync / diskvault)",
    )
    table.add(
        "full throughput",
        f"{fmt_bytes(size / t_full)}/s",
        f"{fmt_bytes(size / t_conv)}/s",
        "",
        "qemu-img convert -O qcow2",
    )
    if libvirt:
        t_vnb, t_dv = libvirt
        table.add(
            "full, libvirt domain (s)",
            t_dv,
            t_vnb,
            ratio(t_vnb, t_dv),
            ">= 1.0x (virtnbdbackup / diskvault)",
        )
    else:
        table.add(
            "full, libvirt domain (s)", "n/a", "n/a", "skipped", "libvirtd or virtnbdbackup missing"
        )
    table.add(
        "incremental bytes written",
        fmt_bytes(inc_bytes),
        fmt_bytes(changed),
        ratio(inc_bytes, changed),
        "<= 1.1x (written / changed)",
    )
    table.add(
        "incremental time (s)", t_inc, t_full, ratio(t_inc, t_full), "<= 0.15x (incremental / full)"
    )
    table.add(
        "5 concurrent fulls",
        f"{fmt_bytes(five)}/s",
        f"{fmt_bytes(one)}/s",
        ratio(five, one),
        "report (aggregate / one)",
    )
    table.print()
    print(f"incremental restore point identical to the source: {check.returncode == 0}")
    print(f"full backup file: {fmt_bytes(allocated(vault.root / (full.path or '')))} allocated")
    if not args.keep:
        for stale in ("data", "repo", "convert.qcow2", "source.qcow2", "libvirt"):
            path = args.work / stale
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(
                missing_ok=True
            )


if __name__ == "__main__":
    sys.exit(main())
