"""Duplicate finding: diskvault (cold and warm hash cache) against jdupes and rmlint.

Builds a fixed tree once (reused while its manifest matches), then times every
tool as a separate process, dropping the page, dentry and inode caches before
each cold run (``echo 3 > /proc/sys/vm/drop_caches``, so run as root) so that
every tool, its binary and interpreter included, starts from the disk:

- diskvault cold: hash cache deleted, caches dropped
- diskvault warm: hash cache present, page cache warm (the re-scan case); the
  tree is unchanged, so the whole result comes from the cache after one walk
- diskvault warm, 1 file touched: as warm, but one file's mtime changed, so
  the result is recomputed from the per-file hash cache (reads nothing)
- diskvault cache+cold: hash cache present, caches dropped (after a reboot)
- jdupes cold / warm: ``jdupes -r -q`` (ignores empty files and symlinks,
  one path per hard-linked inode, like diskvault)
- rmlint cold / warm: ``rmlint -T df -L -F --hidden -o json:FILE`` (duplicate
  files only, hard links are one file, symlinks ignored, hidden files
  included; its default ``--size 1`` skips empty files)

Warm runs are repeated (``--repeat``, interleaved across tools) and the median
is kept. Then checks that the three tools found the same groups, compared as sets of
inodes, since each tool names an arbitrary path of a hard-linked inode.

Goals: cold >= 1.0x jdupes, warm >= 5x jdupes (jdupes time / diskvault time).

    sudo .venv/bin/python bench/dupes.py            # 50,000 files, ~4 GiB
    sudo .venv/bin/python bench/dupes.py --files 2000
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from _common import Table, drop_caches, fmt_bytes, ratio, run, timer

TREE_VERSION = 1
SEED = 20240611
MiB = 1024 * 1024
POOL = 128 * MiB
DUP_SHARE = 0.20
# (share of files, low, high): log-uniform sizes, heavily skewed to small files.
SIZE_MIX = [
    (0.02, 0, 0),
    (0.8747, 1, 64 * 1024),
    (0.10, 64 * 1024, MiB),
    (0.005, MiB, 16 * MiB),
    (0.0003, 16 * MiB, 64 * MiB),
]
Groups = set[frozenset[tuple[int, int]]]


def _size(rng: random.Random) -> int:
    pick = rng.random()
    for share, low, high in SIZE_MIX:
        if pick < share:
            return low if high == 0 else int(math.exp(rng.uniform(math.log(low), math.log(high))))
        pick -= share
    return 1


def build_tree(root: Path, files: int) -> Path:
    """Write the tree under ``root/tree`` unless a matching one is there already."""
    tree, manifest = root / "tree", root / "tree.json"
    want = {"version": TREE_VERSION, "seed": SEED, "files": files}
    if manifest.exists() and json.loads(manifest.read_text()) == want and tree.is_dir():
        return tree
    shutil.rmtree(tree, ignore_errors=True)
    manifest.unlink(missing_ok=True)
    partial = root / "tree.partial"
    shutil.rmtree(partial, ignore_errors=True)
    rng = random.Random(SEED)
    pool = memoryview(rng.randbytes(POOL))

    # A recipe is (size, pool offset, marker offset, marker); copies reuse it.
    recipes: list[tuple[int, int, int, bytes]] = []
    special = max(2 * MiB, 32 * MiB * files // 50_000)
    for i in range(8):  # same size, same head, differ in the last 8 bytes
        recipes.append((special, 0, special - 8, i.to_bytes(8, "little")))
    for i in range(4):  # same size, same head and tail, differ in the middle
        recipes.append((special // 2, MiB, special // 4, i.to_bytes(8, "little")))
    links, symlinks = files // 500, files // 500
    copies = int(files * DUP_SHARE)
    while len(recipes) < files - copies - links - symlinks:
        size = _size(rng)
        marker = (len(recipes) + 1000).to_bytes(8, "little")
        recipes.append((size, rng.randrange(POOL - size + 1), 0, marker))
    originals = len(recipes)
    recipes += [recipes[rng.randrange(originals)] for _ in range(copies)]
    order = list(range(len(recipes)))
    rng.shuffle(order)

    written = 0
    paths: list[Path] = []
    for n, index in enumerate(order):
        path = partial / f"d{n // 1000:03d}" / f"s{n // 100 % 10}" / f"f{index:06d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        size, off, moff, marker = recipes[index]
        marker = marker[: max(0, min(8, size - moff))]
        parts = [pool[off : off + moff], marker, pool[off + moff + len(marker) : off + size]]
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            for part in parts:
                view = memoryview(part)
                while view:
                    view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        written += size
        paths.append(path)
    for i in range(links):
        target = paths[rng.randrange(len(paths))]
        os.link(target, target.with_name(f"hardlink{i:04d}.bin"))
    for i in range(symlinks):
        target = paths[rng.randrange(len(paths))]
        target.with_name(f"symlink{i:04d}.bin").symlink_to(target.name)
    os.sync()
    partial.rename(tree)
    manifest.write_text(json.dumps(want))
    print(f"built {len(recipes) + links + symlinks} entries, {fmt_bytes(written)}", file=sys.stderr)
    return tree


def inode_groups(groups: list[list[str]]) -> Groups:
    out: Groups = set()
    for paths in groups:
        inodes = frozenset((st.st_dev, st.st_ino) for st in map(os.lstat, paths))
        if len(inodes) > 1:
            out.add(inodes)
    return out


def parse_jdupes(stdout: str) -> list[list[str]]:
    return [block.splitlines() for block in stdout.strip().split("\n\n") if block.strip()]


def parse_rmlint(path: Path) -> list[list[str]]:
    groups: dict[tuple[int, str], list[str]] = defaultdict(list)
    for item in json.loads(path.read_text()):
        if item.get("type") == "duplicate_file":
            groups[(item["size"], item["checksum"])].append(item["path"])
    return list(groups.values())


# The diskvault side runs as its own process like the other tools, importing
# only what a caller of the library would (not this script's tree builder).
SCAN_CHILD = """
import json, sys, time
start = time.perf_counter()
from diskvault.organizer.duplicates import find_duplicates
from diskvault.organizer.hashcache import HashCache
root, cache_path, out = sys.argv[1:4]
with HashCache(cache_path) as cache:
    report = find_duplicates(root, cache=cache)
seconds = time.perf_counter() - start
# One write of one string: json.dump's chunked writes took longer than the scan's cache read.
with open(out, "w") as fh:
    fh.write(json.dumps({"seconds": seconds, "groups": [g.paths for g in report.groups],
                         "wasted": report.wasted_bytes, "stats": vars(report.stats),
                         "errors": report.errors[:20]}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp/diskvault-bench/dupes"))
    parser.add_argument("--files", type=int, default=50_000)
    parser.add_argument(
        "--repeat", type=int, default=5, help="warm runs: interleaved repeats, median kept"
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("run as root: cold runs drop the page cache via /proc/sys/vm/drop_caches")

    args.dir.mkdir(parents=True, exist_ok=True)
    with timer() as t:
        tree = build_tree(args.dir, args.files)
    print(f"tree ready in {t.seconds:.1f}s: {tree}", file=sys.stderr)
    cache = args.dir / "hashcache.sqlite"
    work = Path(tempfile.mkdtemp(prefix="dupes-", dir=args.dir))
    py = [sys.executable, "-c", SCAN_CHILD, str(tree), str(cache)]
    runs: dict[str, list[float]] = {}
    found: dict[str, Groups] = {}
    detail: dict[str, str] = {}

    def diskvault(label: str, *, cold: bool, keep_cache: bool) -> None:
        if not keep_cache:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{cache}{suffix}").unlink(missing_ok=True)
        if cold:
            drop_caches()
        out = work / f"{label}.json"
        with timer() as t:
            run([*py, str(out)])
        runs.setdefault(label, []).append(t.seconds)
        result = json.loads(out.read_text())
        found[label] = inode_groups(result["groups"])
        s = result["stats"]
        detail[label] = (
            f"{result['seconds']:.2f}s after interpreter start, read {fmt_bytes(s['bytes_read'])}"
            f" in {s['reads']} reads, {s['cache_hits']} cache hits"
            + (", whole result from cache (tree unchanged)" if s.get("result_cached") else "")
        )

    def jdupes(label: str, *, cold: bool) -> None:
        if cold:
            drop_caches()
        with timer() as t:
            proc = run(["jdupes", "-r", "-q", str(tree)])
        runs.setdefault(label, []).append(t.seconds)
        found[label] = inode_groups(parse_jdupes(proc.stdout))

    def rmlint(label: str, *, cold: bool) -> None:
        out = work / f"{label}.json"
        if cold:
            drop_caches()
        cmd = ["rmlint", "-T", "df", "-L", "-F", "--hidden", "-o", f"json:{out}", str(tree)]
        with timer() as t:
            run(cmd)
        runs.setdefault(label, []).append(t.seconds)
        found[label] = inode_groups(parse_rmlint(out))

    try:
        diskvault("diskvault cold", cold=True, keep_cache=False)
        diskvault("diskvault cache+cold", cold=True, keep_cache=True)
        jdupes("jdupes cold", cold=True)
        rmlint("rmlint cold", cold=True)
        touched = next(p for p in sorted(tree.glob("d000/s0/*")) if p.is_file())
        # Warm runs interleaved, so that load from other processes hits all tools alike.
        for _ in range(args.repeat):
            diskvault("diskvault warm", cold=False, keep_cache=True)
            jdupes("jdupes warm", cold=False)
            os.utime(touched)  # one changed file: no whole-result hit, per-file cache only
            diskvault("diskvault warm, 1 file touched", cold=False, keep_cache=True)
            rmlint("rmlint warm", cold=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    times = {label: statistics.median(seconds) for label, seconds in runs.items()}
    files = sum(1 for _ in tree.rglob("*"))
    size = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file() and not p.is_symlink())
    title = (
        f"duplicates: {args.files} files ({files} entries incl. dirs), {fmt_bytes(size)},"
        f" {time.strftime('%Y-%m-%d %H:%M')}"
    )
    table = Table(["run", "seconds", "jdupes / this", "runs", "notes"], title=title)
    for label, seconds in times.items():
        page = "cold" if "cold" in label else "warm"
        spread = ", ".join(f"{x:.2f}" for x in runs[label])
        table.add(
            label, seconds, ratio(times[f"jdupes {page}"], seconds), spread, detail.get(label, "")
        )
    table.print()

    reference = found["jdupes cold"]
    same = all(groups == reference for groups in found.values())
    counts = ", ".join(f"{label} {len(groups)}" for label, groups in found.items())
    print(f"duplicate groups: {counts}; identical across all runs: {'yes' if same else 'NO'}")
    for label, groups in found.items():
        if groups != reference:
            extra, missing = len(groups - reference), len(reference - groups)
            print(f"  {label}: {extra} groups jdupes lacks, {missing} jdupes has but it lacks")
    cold = times["jdupes cold"] / times["diskvault cold"]
    warm = times["jdupes warm"] / times["diskvault warm"]
    print(
        f"goal cold >= 1.0x: {cold:.2f}x {'met' if cold >= 1.0 else 'NOT met'};"
        f" goal warm >= 5x: {warm:.2f}x {'met' if warm >= 5.0 else 'NOT met'}"
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
