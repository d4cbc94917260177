#!/usr/bin/env python3
"""File-level restore: mount-to-first-listing latency on a 4 GiB chain of 6 restore
points, and 1 GiB download throughput through the API against ``cp``, in one run.

Rows:

- mount -> first listing: ``POST /api/v1/restore/mount`` then ``GET .../files?path=/``,
  wall time over HTTP (target < 1 s; the original design promised < 5 s), for the
  newest point (a chain of 6 qcow2 files) and the oldest (the full alone).
- unmount: ``DELETE /api/v1/restore/{id}`` (reported).
- download: a 1 GiB file through ``GET .../download`` with curl, against ``cp`` of
  the same file from the mounted filesystem, both writing to ``--out-dir`` (tmpfs by
  default, so disk writeback noise is left out of both). The ratio is cp time / API
  time. Cold cache (caches dropped before each run; root) is the restore case: the
  bytes come from the backup chain through QSD; target >= 0.7x. Warm cache (file
  read once first) shows the HTTP transport alone: Python + uvicorn copies every
  byte twice more than cp does, so expect about 0.5x there (reported, no target).

The guest disk is raw GPT with one ext4 partition filling 4 GiB, backed up with
the ``raw`` source; between points a 64 MiB file is added and a small one changed.
Times are medians of ``--repeat`` rounds.

    sudo .venv/bin/python bench/restore.py
    sudo .venv/bin/python bench/restore.py --size-gib 2 --repeat 3
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from _common import Table, drop_caches, fmt_bytes, ratio, run, timer

from diskvault.backups import engine, repositories, service
from diskvault.backups.locks import local_holder
from diskvault.backups.models import RepositoryKind, SourceKind
from diskvault.config import Settings, load_settings
from diskvault.db.engine import session_scope
from diskvault.db.migrate import upgrade
from diskvault.logging import configure

MiB = 1024 * 1024
GiB = 1024 * MiB
PART_OFFSET = MiB
PASSWORD = "bench-restore-admin"
POINTS = 6


def random_file(path: Path, size: int, seed: int) -> None:
    rng = random.Random(seed)
    with open(path, "wb") as fh:
        for _ in range(size // MiB):
            fh.write(rng.randbytes(MiB))


def build_disk(work: Path, size: int, big: int) -> Path:
    """GPT with one ext4 partition, holding ``big`` bytes of random data and a small tree."""
    disk = work / "guest.raw"
    tree = work / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    (tree / "var/www").mkdir(parents=True)
    (tree / "etc").mkdir()
    (tree / "etc/hostname").write_text("bench\n")
    (tree / "var/www/index.php").write_text("<?php echo 0; ?>\n")
    random_file(tree / "big.bin", big, 1)
    disk.unlink(missing_ok=True)
    with open(disk, "wb") as fh:
        fh.truncate(size)
    run(["sgdisk", "-n", f"1:{PART_OFFSET // 512}:0", disk])
    part_size = size - PART_OFFSET - MiB  # GPT keeps a backup table at the end
    loop = run(
        ["losetup", "-f", "--show", "-o", str(PART_OFFSET), "--sizelimit", str(part_size), disk]
    ).stdout.strip()
    try:
        run(["mkfs.ext4", "-q", "-L", "BENCH", "-d", tree, loop], timeout=600)
    finally:
        run(["losetup", "-d", loop])
    shutil.rmtree(tree)
    return disk


def change(disk: Path, work: Path, n: int) -> None:
    """What a guest does between backups: a new 64 MiB file and an edited page."""
    mnt = work / "rw"
    mnt.mkdir(exist_ok=True)
    run(["mount", "-o", f"loop,offset={PART_OFFSET}", disk, mnt])
    try:
        random_file(mnt / f"new-{n}.bin", 64 * MiB, 100 + n)
        (mnt / "var/www/index.php").write_text(f"<?php echo {n}; ?>\n")
    finally:
        run(["umount", mnt])


def make_points(settings: Settings, disk: Path, work: Path) -> list[str]:
    with session_scope(settings.DATABASE_URL) as s:
        repo = repositories.create_repository(
            s, settings, name="bench", kind=RepositoryKind.local, path=str(work / "repo"), url=None
        ).id
        service.create_source(s, "guest", SourceKind.raw, {"path": str(disk)})
    points = []
    for n in range(POINTS):
        if n:
            change(disk, work, n)
        req = engine.RunRequest("guest", repo, "full" if n == 0 else "incremental",
                                holder=local_holder(settings))  # fmt: skip
        with timer() as t:
            (point,) = engine.run(settings, req)
        print(f"restore point {n + 1}: {t.seconds:.1f} s", file=sys.stderr)
        points.append(point)
    return points


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def serve(data: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DISKVAULT_DATA_DIR": str(data),
        "DISKVAULT_PORT": str(port),
        "DISKVAULT_BIND_HOST": "127.0.0.1",
        "DISKVAULT_ADMIN_PASSWORD": PASSWORD,
        "DISKVAULT_WORKERS": "0",
        "DISKVAULT_LOG_LEVEL": "WARNING",
    }
    exe = Path(sys.executable).parent / "diskvault"
    log = open(data / "bench-server.log", "ab")  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen([str(exe), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server did not start; see bench-server.log")


def mount_to_listing(api: httpx.Client, point: str) -> tuple[str, float, list[str]]:
    with timer() as t:
        made = api.post("/api/v1/restore/mount", json={"backup_id": point})
        made.raise_for_status()
        mount_id = made.json()["mount_id"]
        listing = api.get(f"/api/v1/restore/{mount_id}/files", params={"path": "/"})
        listing.raise_for_status()
    return mount_id, t.seconds, [e["name"] for e in listing.json()["items"]]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(4 * MiB):
            h.update(chunk)
    return h.hexdigest()


def bench_mounts(api: httpx.Client, points: list[str], repeat: int, table: Table) -> None:
    for label, point in (("newest (6-point chain)", points[-1]), ("oldest (full)", points[0])):
        mounts, unmounts = [], []
        for _ in range(repeat):
            mount_id, seconds, names = mount_to_listing(api, point)
            assert "big.bin" in names, names
            mounts.append(seconds)
            with timer() as t:
                api.delete(f"/api/v1/restore/{mount_id}").raise_for_status()
            unmounts.append(t.seconds)
        table.add(f"mount -> first listing, {label}", statistics.median(mounts), "< 1 s")
        table.add(f"unmount, {label}", statistics.median(unmounts), "")


def bench_download(
    source: Path, url: str, token: str, out: Path, repeat: int, cold: bool, table: Table
) -> None:
    """cp from the mount and curl from the API, each writing ``out``; alternated."""
    size = source.stat().st_size
    cp_times: list[float] = []
    api_times: list[float] = []
    digests = set()
    for _ in range(repeat):
        for times, cmd in (
            (cp_times, ["cp", source, out]),
            (api_times, ["curl", "-sfS", "-o", out, "-H", f"Authorization: Bearer {token}", url]),
        ):
            out.unlink(missing_ok=True)
            if cold:
                drop_caches()
            else:
                run(["dd", f"if={source}", "of=/dev/null", "bs=4M", "status=none"])
            with timer() as t:
                run(cmd)
            times.append(t.seconds)
            digests.add(sha256(out))
    out.unlink(missing_ok=True)
    assert len(digests) == 1, "the API sent different bytes than cp read"
    cp_s, api_s = statistics.median(cp_times), statistics.median(api_times)
    cache = "cold cache" if cold else "warm cache"
    rate = size / MiB
    table.add(f"cp {fmt_bytes(size)} from the mount, {cache}", cp_s, f"{rate / cp_s:.0f} MiB/s")
    table.add(f"API download (curl), {cache}", api_s, f"{rate / api_s:.0f} MiB/s")
    table.add(f"API / cp throughput, {cache}", ratio(cp_s, api_s), ">= 0.7x" if cold else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-gib", type=float, default=4.0)
    parser.add_argument("--file-gib", type=float, default=1.0)
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/dv-bench-restore"))
    parser.add_argument(
        "--out-dir", type=Path, default=Path("/dev/shm"), help="where cp and curl write (tmpfs)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="median of this many runs")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    configure("WARNING", "console")
    work: Path = args.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    data = work / "data"
    settings = load_settings(DATA_DIR=data, WORKERS=0)
    upgrade(settings.DATABASE_URL)
    disk = build_disk(work, int(args.size_gib * GiB), int(args.file_gib * GiB))
    points = make_points(settings, disk, work)
    port = free_port()
    server = serve(data, port)
    try:
        base = f"http://127.0.0.1:{port}"
        login = {"username": "admin", "password": PASSWORD}
        token = httpx.post(base + "/api/v1/auth/login", json=login).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        table = Table(
            ["measure", "median (s or ratio)", "target / note"], title="file-level restore"
        )
        with httpx.Client(base_url=base, headers=headers, timeout=600) as api:
            bench_mounts(api, points, args.repeat, table)
            mount_id, _, _ = mount_to_listing(api, points[-1])
            source = data / "mounts" / mount_id[:12] / "p1" / "big.bin"
            url = f"{base}/api/v1/restore/{mount_id}/download?path=/big.bin"
            out = args.out_dir / f"dv-bench-restore-{os.getpid()}.out"
            for cold in (True, False):
                bench_download(source, url, token, out, args.repeat, cold, table)
            api.delete(f"/api/v1/restore/{mount_id}")
        table.print()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
