from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from diskvault.organizer.duplicates import DuplicateReport, find_duplicates
from diskvault.organizer.hashcache import HashCache, Hashes
from diskvault.organizer.walk import FileEntry, walk

if TYPE_CHECKING:
    from conftest import SampleTree


def group_sets(report: DuplicateReport) -> set[frozenset[Path]]:
    return {frozenset(g.files) for g in report.groups}


def test_warm_rescan_reads_nothing(sample_tree: SampleTree, cache: HashCache) -> None:
    cold = find_duplicates(sample_tree.root, cache=cache)
    warm = find_duplicates(sample_tree.root, cache=cache)

    assert cold.stats.bytes_read > 0
    assert cold.stats.cache_hits == 0
    assert warm.stats.bytes_read == 0
    assert warm.stats.reads == 0
    assert warm.stats.cache_hits == cold.stats.reads
    assert group_sets(warm) == group_sets(cold) == sample_tree.groups
    assert [g.hash for g in warm.groups] == [g.hash for g in cold.groups]


def test_cache_survives_reopen(sample_tree: SampleTree, tmp_path: Path) -> None:
    path = tmp_path / "hashes.sqlite"
    with HashCache(path) as cache:
        find_duplicates(sample_tree.root, cache=cache)
    with HashCache(path) as cache:
        warm = find_duplicates(sample_tree.root, cache=cache)

    assert warm.stats.bytes_read == 0
    assert group_sets(warm) == sample_tree.groups


def test_content_change_with_new_mtime_is_rehashed(
    fresh_tree: SampleTree, cache: HashCache
) -> None:
    find_duplicates(fresh_tree.root, cache=cache)
    copy = fresh_tree.root / "b" / "one-copy.txt"
    data = bytearray(copy.read_bytes())
    data[0] ^= 0xFF  # same size, different content
    copy.write_bytes(bytes(data))
    st = copy.stat()
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))

    report = find_duplicates(fresh_tree.root, cache=cache)

    assert report.stats.reads == 1
    assert report.stats.bytes_read == len(data)
    assert copy not in {p for g in report.groups for p in g.files}


def test_size_change_is_rehashed(fresh_tree: SampleTree, cache: HashCache) -> None:
    find_duplicates(fresh_tree.root, cache=cache)
    big2 = fresh_tree.root / "sub" / "big2.bin"
    with big2.open("ab") as f:
        f.write(b"x")
    # Give big1 a same-size sibling again, so both sizes are compared.
    (fresh_tree.root / "big3.bin").write_bytes(big2.read_bytes())

    report = find_duplicates(fresh_tree.root, cache=cache)

    grown = frozenset({big2, fresh_tree.root / "big3.bin"})
    assert grown in group_sets(report)
    assert frozenset({fresh_tree.root / "big1.bin", big2}) not in group_sets(report)
    assert report.stats.bytes_read >= 2 * (fresh_tree.large_size + 1)


def test_head_only_hashes_are_reused(tmp_path: Path, cache: HashCache) -> None:
    # Two large files of one size that differ in their first block: only
    # their heads are ever read, and the cache must keep those too.
    for name, byte in (("x.bin", b"x"), ("y.bin", b"y")):
        (tmp_path / name).write_bytes(byte * (512 * 1024))

    cold = find_duplicates(tmp_path, cache=cache)
    warm = find_duplicates(tmp_path, cache=cache)

    assert cold.stats.reads == 2
    assert warm.stats.reads == 0
    assert warm.stats.cache_hits == 2
    assert cold.groups == warm.groups == []


def test_store_and_lookup_full_64_bit_keys(cache: HashCache) -> None:
    entry = FileEntry("/x", 10, 1_700_000_000_123_456_789, 2**64 - 5, 2**63 + 7, 1)
    other = entry._replace(ino=2**63 + 8)
    cache.store([(entry, Hashes(b"h", None, b"f"))])

    assert cache.lookup([entry, other]) == {(entry.dev, entry.ino): Hashes(b"h", None, b"f")}
    assert cache.lookup([entry._replace(mtime_ns=entry.mtime_ns + 1)]) == {}
    assert cache.lookup([entry._replace(size=11)]) == {}
    assert len(cache) == 1


def test_algorithms_do_not_share_rows(tmp_path: Path) -> None:
    path = tmp_path / "hashes.sqlite"
    entry = FileEntry("/x", 10, 1, 1, 1, 1)
    with HashCache(path, algorithm="blake2b") as blake:
        blake.store([(entry, Hashes(None, None, b"f"))])
    with HashCache(path, algorithm="sha256") as sha:
        assert sha.lookup([entry]) == {}
        assert len(sha) == 0


def test_corrupt_cache_file_is_recreated(tmp_path: Path, sample_tree: SampleTree) -> None:
    path = tmp_path / "hashes.sqlite"
    path.write_bytes(b"this is not a database" * 100)

    with HashCache(path) as cache:
        report = find_duplicates(sample_tree.root, cache=cache)
        assert len(cache) > 0

    assert group_sets(report) == sample_tree.groups


def test_unchanged_tree_gets_the_whole_result_from_the_cache(
    fresh_tree: SampleTree, cache: HashCache
) -> None:
    cold = find_duplicates(fresh_tree.root, cache=cache)
    warm = find_duplicates(fresh_tree.root, cache=cache)

    assert not cold.stats.result_cached and warm.stats.result_cached
    assert [g.paths for g in warm.groups] == [g.paths for g in cold.groups]
    assert [g.hash for g in warm.groups] == [g.hash for g in cold.groups]
    assert warm.empty_files == cold.empty_files
    assert warm.stats.files_scanned == cold.stats.files_scanned


def test_an_edit_with_its_mtime_put_back_is_still_noticed(
    fresh_tree: SampleTree, cache: HashCache
) -> None:
    find_duplicates(fresh_tree.root, cache=cache)
    copy = fresh_tree.root / "b" / "one-copy.txt"
    st = copy.stat()
    copy.write_bytes(b"HELLO WORLD\n" * 10)  # same size, now equal to a/other.txt
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime restored; ctime cannot be

    again = find_duplicates(fresh_tree.root, cache=cache)

    # Recomputed; the per-file cache is keyed by mtime (as specified), so only
    # the whole-result cache, which also fingerprints ctime, notices this edit.
    assert not again.stats.result_cached


def test_new_file_invalidates_the_stored_result(fresh_tree: SampleTree, cache: HashCache) -> None:
    find_duplicates(fresh_tree.root, cache=cache)
    (fresh_tree.root / "a" / "one-more.txt").write_bytes(b"hello world\n" * 10)
    again = find_duplicates(fresh_tree.root, cache=cache)
    assert not again.stats.result_cached
    small = max(again.groups, key=lambda g: len(g.paths))
    assert len(small.paths) == 4


def test_an_unreadable_stored_result_is_recomputed(
    fresh_tree: SampleTree, cache: HashCache
) -> None:
    cold = find_duplicates(fresh_tree.root, cache=cache)
    with sqlite3.connect(cache.path) as db:
        db.execute("UPDATE results SET payload = ?", (b"\x00not marshal",))

    again = find_duplicates(fresh_tree.root, cache=cache)
    healed = find_duplicates(fresh_tree.root, cache=cache)

    assert not again.stats.result_cached
    assert again.groups == cold.groups
    assert healed.stats.result_cached and healed.groups == cold.groups


def test_pre_walked_entries_use_the_stored_result(fresh_tree: SampleTree, cache: HashCache) -> None:
    cold = find_duplicates(list(walk(fresh_tree.root)), cache=cache)
    warm = find_duplicates(list(walk(fresh_tree.root)), cache=cache)
    os.utime(fresh_tree.root / "a" / "one.txt")
    touched = find_duplicates(list(walk(fresh_tree.root)), cache=cache)

    assert warm.stats.result_cached and warm.groups == cold.groups
    assert not touched.stats.result_cached and touched.groups == cold.groups


def test_warm_rescan_imports_only_what_it_needs(fresh_tree: SampleTree, tmp_path: Path) -> None:
    # The warm re-scan is a walk and one cache read: in a fresh interpreter,
    # importing typing, re, json, dataclasses or pathlib, or the comparing
    # half with its thread pool, would cost it more than a tenth.
    path = tmp_path / "hashes.sqlite"
    with HashCache(path) as cache:
        find_duplicates(fresh_tree.root, cache=cache)
    script = (
        "import sys\n"
        "from diskvault.organizer.duplicates import find_duplicates\n"
        "from diskvault.organizer.hashcache import HashCache\n"
        "with HashCache(sys.argv[2]) as cache:\n"
        "    report = find_duplicates(sys.argv[1], cache=cache)\n"
        "assert report.stats.result_cached and len(report.groups) == 2\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(fresh_tree.root), str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()

    heavy = {
        "typing",
        "re",
        "json",
        "dataclasses",
        "pathlib",
        "hashlib",
        "threading",
        "concurrent.futures",
        "diskvault.organizer.compare",
    }
    assert heavy.isdisjoint(out)
