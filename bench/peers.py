#!/usr/bin/env python3
"""Backups side by side: diskvault (plain, zstd, LUKS) against borg (repokey, zstd and
lz4) and restic, on the same disk in one run.

The disk (default 4 GiB) is a qcow2 and its raw view, MiB blocks in a realistic mix:
about 40% zeros, 30% text-like (compressible, unique per block) and 30% random.
diskvault backs up the qcow2 (a ``qcow2`` source: dirty bitmaps); borg and restic
back up the raw file. A round makes a full with each tool, rewrites 5% of the disk
in scattered 1 MiB blocks (the same bytes in both views), makes each tool's
incremental, measures the bytes each repository stores, and restores the latest
point of each to a raw file, compared byte for byte with the disk. Caches are
dropped before each timed run (root); times are medians over ``--runs`` rounds.

Ratios are against the best of borg and restic for that measure; goals:
incremental <= 0.5x, full <= 1.0x, bytes <= 1.3x (diskvault zstd), restore <= 1.0x.

A last table times a diskvault full of an all-random disk (a quarter of the size)
with and without zstd: what incompressible data costs with compression on.

diskvault's restore is its job's own path: ``qemu-img convert`` to the file, then
``qemu-img compare`` against the point (a restore counts only once verified).

    sudo .venv/bin/python bench/peers.py                     # 4 GiB, 3 rounds
    sudo .venv/bin/python bench/peers.py --size-gib 0.5 --runs 1
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import shutil
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from _common import Table, drop_caches, fmt_bytes, ratio, run, timer

from diskvault.backups import engine, keys, repositories, restore, service
from diskvault.backups.locks import local_holder
from diskvault.backups.models import RepositoryKind, SourceKind
from diskvault.config import Settings, load_settings
from diskvault.db.engine import session_scope
from diskvault.db.migrate import upgrade
from diskvault.logging import configure

MiB = 1024 * 1024
GiB = 1024 * MiB
SEED = 20261203
PASSWORD = "bench-only-passphrase"
WORDS = (
    "the a of to and in is for on with as by at from that this it be are was not or "
    "server disk backup kernel module user root home var log etc usr lib config service "
    "error warning info debug request response timeout retry connect socket port address "
    "database table index query commit rollback transaction session cache memory page"
)


def text_pool(rng: random.Random, size: int = 8 * MiB) -> bytes:
    words = rng.choices(WORDS.split(" "), k=size // 5)
    lines = [" ".join(words[i : i + 12]) for i in range(0, len(words), 12)]
    return ("\n".join(lines).encode() * 2)[:size]


def make_disk(raw: Path, qcow2: Path, size: int) -> None:
    """The mixed disk, as a sparse raw file and a qcow2 with the same content."""
    rng = random.Random(SEED)
    pool = text_pool(rng)
    with open(raw, "wb") as fh:
        fh.truncate(size)
        for block in range(size // MiB):
            kind = rng.choices(("zero", "text", "random"), weights=(40, 30, 30))[0]
            if kind == "zero":
                continue
            if kind == "random":
                data = rng.randbytes(MiB)
            else:  # unique per 4 KiB page, so deduplicating tools find no repeats
                pages = []
                for page in range(MiB // 4096):
                    start = rng.randrange(len(pool) - 4096)
                    head = f"{block:08d}:{page:04d} ".encode()
                    pages.append(head + pool[start : start + 4096 - len(head)])
                data = b"".join(pages)
            fh.seek(block * MiB)
            fh.write(data)
    run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow2])


def rewrite(raw: Path, disks: list[Path], size: int, seed: int, work: Path) -> int:
    """Rewrite 5% of the disk in scattered 1 MiB blocks, the same in both views."""
    rng = random.Random(seed)
    blocks = sorted(rng.sample(range(size // MiB), max(1, size // MiB // 20)))
    commands = []
    with open(raw, "r+b") as fh:
        for n, block in enumerate(blocks):
            data = rng.randbytes(MiB // 2) + bytes(rng.randrange(256) for _ in range(64)) * (
                MiB // 2 // 64
            )
            piece = work / f"piece-{n}.bin"
            piece.write_bytes(data)
            fh.seek(block * MiB)
            fh.write(data)
            commands += ["-c", f"write -s {piece} {block * MiB} {MiB}"]
    for disk in disks:
        run(["qemu-io", "-f", "qcow2", *commands, disk])
    for piece in work.glob("piece-*.bin"):
        piece.unlink()
    return len(blocks) * MiB


def allocated(root: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in root.rglob("*") if p.is_file())


def same_bytes(a: Path, b: Path) -> bool:
    return run(["cmp", "-s", a, b], check=False).returncode == 0


class Tool:
    name = ""
    made = itertools.count()

    def __init__(self, work: Path) -> None:
        # A new directory each time: diskvault keeps its engines by database URL.
        self.work = work / f"{self.name}-{next(self.made)}"
        self.work.mkdir(parents=True)

    def full(self) -> None: ...
    def incremental(self) -> None: ...
    def restore(self, dest: Path) -> None: ...
    def stored(self) -> int:
        return allocated(self.work / "repo")


class Vault(Tool):
    """diskvault's engine in-process, on its own DB and repository."""

    def __init__(self, work: Path, disk: Path, name: str, **repo: object) -> None:
        self.name = name
        super().__init__(work)
        self.settings: Settings = load_settings(DATA_DIR=self.work / "data", WORKERS=0)
        upgrade(self.settings.DATABASE_URL)
        with session_scope(self.settings.DATABASE_URL) as s:
            if repo.get("encryption") == "luks":
                key = self.work / "repo.key"
                keys.create(key)
                repo["key_file"] = str(key)
            row = repositories.create_repository(
                s,
                self.settings,
                name="bench",
                kind=RepositoryKind.local,
                path=str(self.work / "repo"),
                url=None,
                **repo,  # type: ignore[arg-type]
            )
            self.repo = row.id
            service.create_source(s, "disk", SourceKind.qcow2, {"disks": [str(disk)]})
        self.points: list[str] = []

    def _run(self, kind: str) -> None:
        req = engine.RunRequest("disk", self.repo, kind, holder=local_holder(self.settings))
        self.points += engine.run(self.settings, req)

    def full(self) -> None:
        self._run("full")

    def incremental(self) -> None:
        self._run("incremental")

    def restore(self, dest: Path) -> None:
        with session_scope(self.settings.DATABASE_URL) as s:
            point = service.restore_point(s, self.points[-1])
        restore.to_file(self.settings, point.id, point.image, dest, "raw", crypt=point.crypt)


class Borg(Tool):
    def __init__(self, work: Path, raw: Path, compression: str) -> None:
        self.name = f"borg {compression.split(',')[0]}"
        super().__init__(work)
        self.raw, self.compression, self.n = raw, compression, 0
        self.env = {
            **os.environ,
            "BORG_PASSPHRASE": PASSWORD,
            "BORG_BASE_DIR": str(self.work / "home"),
        }
        self.repo = self.work / "repo"
        self._borg("init", "--encryption=repokey", self.repo)

    def _borg(self, *args: object, cwd: Path | None = None) -> None:
        import subprocess

        argv = ["borg", *(os.fspath(a) if isinstance(a, Path) else str(a) for a in args)]
        print("+ " + " ".join(argv), file=sys.stderr, flush=True)
        subprocess.run(argv, env=self.env, cwd=cwd, check=True, timeout=7200, capture_output=True)

    def _create(self) -> None:
        self.n += 1
        archive = f"{self.repo}::p{self.n}"
        self._borg("create", "--compression", self.compression, archive, self.raw)

    full = incremental = _create

    def restore(self, dest: Path) -> None:
        out = dest.parent / "borg-out"
        out.mkdir()
        self._borg("extract", "--sparse", f"{self.repo}::p{self.n}", cwd=out)
        (out / str(self.raw).lstrip("/")).rename(dest)
        shutil.rmtree(out)


class Restic(Tool):
    name = "restic"

    def __init__(self, work: Path, raw: Path) -> None:
        super().__init__(work)
        self.raw = raw
        self.env = {
            **os.environ,
            "RESTIC_PASSWORD": PASSWORD,
            "RESTIC_REPOSITORY": str(self.work / "repo"),
            "RESTIC_CACHE_DIR": str(self.work / "cache"),
        }
        self._restic("init", "--repository-version", "2")

    def _restic(self, *args: object) -> None:
        import subprocess

        argv = ["restic", *(str(a) for a in args)]
        print("+ " + " ".join(argv), file=sys.stderr, flush=True)
        subprocess.run(argv, env=self.env, check=True, timeout=7200, capture_output=True)

    def _backup(self) -> None:
        self._restic("backup", "--compression", "auto", self.raw)

    full = incremental = _backup

    def restore(self, dest: Path) -> None:
        out = dest.parent / "restic-out"
        self._restic("restore", "latest", "--target", out)
        (out / str(self.raw).lstrip("/")).rename(dest)
        shutil.rmtree(out)


def cold() -> None:
    if os.geteuid() == 0:
        drop_caches()
        for tool in ("qemu-img", "qemu-storage-daemon", "borg", "restic"):
            run([tool, "--version"], check=False)
    else:
        os.sync()


def timed(fn: Callable[[], object]) -> float:
    cold()
    with timer() as t:
        fn()
    return t.seconds


@dataclass
class Figures:
    full: list[float] = field(default_factory=list)
    incremental: list[float] = field(default_factory=list)
    stored: list[int] = field(default_factory=list)
    restore: list[float] = field(default_factory=list)


def one_round(
    work: Path, base: tuple[Path, Path], size: int, n: int, out: dict[str, Figures]
) -> None:
    # Each diskvault repository gets its own copy of the qcow2: a run drops the dirty
    # bitmaps that its own database does not know.
    raw, disks = work / "disk.raw", [work / f"disk-{n}.qcow2" for n in range(3)]
    run(["cp", "--sparse=always", base[0], raw])
    for disk in disks:
        run(["cp", "--sparse=always", base[1], disk])
    tools: list[Tool] = [
        Vault(work, disks[0], "diskvault plain"),
        Vault(work, disks[1], "diskvault zstd", compression="zstd"),
        Vault(work, disks[2], "diskvault luks", encryption="luks"),
        Borg(work, raw, "zstd,3"),
        Borg(work, raw, "lz4"),
        Restic(work, raw),
    ]
    for tool in tools:
        out.setdefault(tool.name, Figures()).full.append(timed(tool.full))
    rewrite(raw, disks, size, SEED + n, work)
    for tool in tools:
        out[tool.name].incremental.append(timed(tool.incremental))
        out[tool.name].stored.append(tool.stored())
    dest = work / "restored.raw"
    for tool in tools:
        out[tool.name].restore.append(timed(lambda t=tool: t.restore(dest)))
        if not same_bytes(dest, raw):
            raise SystemExit(f"{tool.name}: the restored disk differs from the disk")
        dest.unlink()
    for tool in tools:
        shutil.rmtree(tool.work)


def incompressible(work: Path, size: int, runs: int) -> tuple[float, float]:
    """Full time of an all-random disk, without and with zstd (medians)."""
    raw, disk = work / "random.raw", work / "random.qcow2"
    with open(raw, "wb") as fh:
        for _ in range(size // MiB):
            fh.write(os.urandom(MiB))
    run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, disk])
    raw.unlink()
    plain, zstd = [], []
    for _ in range(runs):
        plain.append(timed(Vault(work, disk, "rnd plain").full))
        zstd.append(timed(Vault(work, disk, "rnd zstd", compression="zstd").full))
        for path in work.glob("rnd *"):
            shutil.rmtree(path)
    disk.unlink()
    return statistics.median(plain), statistics.median(zstd)


def report(out: dict[str, Figures], size: int, rounds: int) -> None:
    med = {
        name: (
            statistics.median(f.full),
            statistics.median(f.incremental),
            statistics.median(f.stored),
            statistics.median(f.restore),
        )
        for name, f in out.items()
    }
    peers = [v for k, v in med.items() if not k.startswith("diskvault")]
    best = [min(p[i] for p in peers) for i in range(4)]
    table = Table(
        [
            "tool",
            "full (s)",
            "incr (s)",
            "stored",
            "restore (s)",
            "full",
            "incr",
            "bytes",
            "restore",
        ],
        title=f"{fmt_bytes(size)} disk (40% zeros, 30% text, 30% random), 5% rewritten, "
        f"medians of {rounds} round(s); ratios vs the best of borg/restic",
    )
    for name, (full, incr, stored, rest) in med.items():
        table.add(
            name,
            full,
            incr,
            fmt_bytes(stored),
            rest,
            ratio(full, best[0]),
            ratio(incr, best[1]),
            ratio(stored, best[2]),
            ratio(rest, best[3]),
        )
    table.print()
    print(
        "goals (diskvault / best peer): incr <= 0.5x, full <= 1.0x, bytes <= 1.3x (zstd), "
        "restore <= 1.0x; every restore was compared byte for byte with the disk"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-gib", type=float, default=4.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/diskvault-bench-peers"))
    args = parser.parse_args()
    configure("WARNING")
    size = int(args.size_gib * GiB) // MiB * MiB
    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    base = (work / "base.raw", work / "base.qcow2")
    make_disk(*base, size)
    plain, zstd = incompressible(work, max(size // 4 // MiB * MiB, MiB), args.runs)
    rnd = Table(["measure", "plain (s)", "zstd (s)", "ratio"], title="incompressible data")
    rnd.add(f"full of {fmt_bytes(size // 4)} random", plain, zstd, ratio(zstd, plain))
    rnd.print()
    out: dict[str, Figures] = {}
    for n in range(args.runs):
        one_round(work, base, size, n, out)
        report(out, size, n + 1)  # after each round, so a cut-short run still tells
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
