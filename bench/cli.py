#!/usr/bin/env python3
"""CLI start-up and ``image convert`` (local) against their baselines, in one run.

Rows, each the median of ``--runs`` runs with bytecode cached (one warm-up first):

1. ``diskvault version`` against ``python -c pass`` (the interpreter's floor);
   goal: under 120 ms;
2. ``diskvault --help``; goal: under 250 ms;
3. ``diskvault image list`` against a real ``diskvault serve``: the client's
   overhead is the command's time minus a bare HTTP GET of the same route
   (fresh connection, same token); goal: under 250 ms;
4. ``diskvault image convert SRC DST --to raw`` (a DST implies --local) of a
   VHDX (2 GiB, half its 1 MiB clusters random data; ``--big`` adds 8 GiB)
   against ``qemu-img convert -f vhdx -O raw`` followed by ``sync -f`` (the CLI
   flushes DST before naming it). The VHDX's pages are evicted before each
   run. Goals: >= 0.9x at 2 GiB, >= 0.97x at 8 GiB (baseline time / diskvault time).

Where the rest of a convert's time goes: the CLI inspects the headers, runs
``qemu-img info`` under limits, checks free space, converts with ``-m 8 -W``
into ``DST.partial``, then fsyncs (the final flush) and renames.

Usage: .venv/bin/python bench/cli.py [--runs 5] [--big | --no-convert] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from _common import Table, evict, fmt_bytes, ratio, run
from convert import MiB, Server, build_vhdx

BIN = Path(sys.executable).parent / "diskvault"
GiB = 1024 * MiB


def wall(argv: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, capture_output=True, timeout=600)
    return time.perf_counter() - start


def median(fn: object, runs: int) -> float:
    assert callable(fn)
    fn()  # warm-up: bytecode and page cache
    return statistics.median(fn() for _ in range(runs))


def startup(runs: int, table: Table) -> None:
    floor = median(lambda: wall([sys.executable, "-c", "pass"]), runs)
    version = median(lambda: wall([str(BIN), "version"]), runs)
    helped = median(lambda: wall([str(BIN), "--help"]), runs)
    table.add("python -c pass", floor, "", "floor")
    table.add("diskvault version", version, ratio(version, floor) + " of floor", "< 0.120 s")
    table.add("diskvault --help", helped, ratio(helped, floor) + " of floor", "< 0.250 s")


def api_overhead(runs: int, workdir: Path, table: Table) -> None:
    server = Server(workdir / "server")
    try:
        env = {
            **os.environ,
            "DISKVAULT_URL": server.url,
            "DISKVAULT_TOKEN": server.token,
            "XDG_CONFIG_HOME": str(workdir / "cfg"),
            "COLUMNS": "120",
        }
        headers = {"Authorization": f"Bearer {server.token}"}

        def bare() -> float:
            start = time.perf_counter()
            httpx.get(server.url + "/api/v1/images", headers=headers).raise_for_status()
            return time.perf_counter() - start

        http = median(bare, runs)
        cli = median(lambda: wall([str(BIN), "image", "list"], env), runs)
        table.add("GET /api/v1/images (httpx)", http, "", "")
        table.add("diskvault image list", cli, f"overhead {cli - http:.3f} s", "< 0.250 s")
    finally:
        server.stop()


def convert(runs: int, size: int, workdir: Path, table: Table) -> None:
    vhdx = build_vhdx(workdir, size)
    out = workdir / "out.raw"

    def baseline() -> float:
        out.unlink(missing_ok=True)
        evict(vhdx)
        start = time.perf_counter()
        run(["qemu-img", "convert", "-f", "vhdx", "-O", "raw", vhdx, out])
        run(["sync", "-f", out])
        return time.perf_counter() - start

    def diskvault() -> float:
        out.unlink(missing_ok=True)
        evict(vhdx)
        return wall([str(BIN), "image", "convert", str(vhdx), str(out), "--to", "raw"])

    base = median(baseline, runs)
    ours = median(diskvault, runs)
    goal = ">= 0.90x" if size <= 2 * GiB else ">= 0.97x"
    table.add(f"qemu-img convert + sync, {fmt_bytes(size)}", base, "", "baseline")
    table.add(f"image convert (local), {fmt_bytes(size)}", ours, ratio(base, ours), goal)
    out.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--convert-runs", type=int, default=2)
    parser.add_argument("--big", action="store_true", help="also convert 8 GiB")
    parser.add_argument("--no-convert", action="store_true", help="start-up rows only")
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/dv-bench-cli"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    table = Table(["what", "seconds (median)", "ratio", "goal"], title="diskvault CLI")
    try:
        startup(args.runs, table)
        api_overhead(args.runs, args.workdir, table)
        sizes = () if args.no_convert else (2 * GiB, 8 * GiB) if args.big else (2 * GiB,)
        for size in sizes:
            convert(args.convert_runs, size, args.workdir, table)
    finally:
        table.print()
        shutil.rmtree(args.workdir / "server", ignore_errors=True)


if __name__ == "__main__":
    main()
