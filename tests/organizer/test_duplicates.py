from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from diskvault.errors import NotFound
from diskvault.organizer.compare import BLOCK
from diskvault.organizer.duplicates import DuplicateReport, find_duplicates
from diskvault.organizer.hashcache import HashCache
from diskvault.organizer.walk import walk
from diskvault.tools.process import Cancelled

if TYPE_CHECKING:
    from conftest import SampleTree


def group_sets(report: DuplicateReport) -> set[frozenset[Path]]:
    return {frozenset(g.files) for g in report.groups}


def test_finds_exactly_the_duplicate_groups(sample_tree: SampleTree) -> None:
    report = find_duplicates(sample_tree.root)

    assert group_sets(report) == sample_tree.groups
    assert report.errors == []
    small = next(g for g in report.groups if len(g.files) == 3)
    assert small.wasted_bytes == 2 * sample_tree.small_size
    assert report.wasted_bytes == 2 * sample_tree.small_size + sample_tree.large_size
    assert len(small.hash) == 32  # xxh3_128, hex


def test_reads_only_what_still_collides(sample_tree: SampleTree) -> None:
    report = find_duplicates(sample_tree.root)

    # 6 same-size large files: 6 heads, 6 tails (big, tail and mid pairs survive
    # the head stage), then only the big and mid pairs are read in full. The
    # 4 small files sharing a size are each read once, whole.
    expected = 12 * BLOCK + 4 * sample_tree.large_size + 4 * sample_tree.small_size
    assert report.stats.bytes_read == expected
    assert report.stats.reads == 12 + 4 + 4


def test_hardlinks_count_once_and_are_not_duplicates(sample_tree: SampleTree) -> None:
    report = find_duplicates(sample_tree.root)

    everything = {p for g in report.groups for p in g.files}
    assert sample_tree.root / "hard-one.txt" not in everything  # a/one.txt sorts first
    assert sample_tree.root / "a" / "unique.txt" not in everything
    assert sample_tree.root / "hard-unique.txt" not in everything
    assert report.stats.hardlinks == 2


def test_same_size_files_differing_at_end_or_middle_are_not_duplicates(
    sample_tree: SampleTree,
) -> None:
    everything = {p.name for g in find_duplicates(sample_tree.root).groups for p in g.files}

    assert not everything & {"tail-a.bin", "tail-b.bin", "mid-a.bin", "mid-b.bin"}


def test_empty_files_are_listed_apart(sample_tree: SampleTree) -> None:
    report = find_duplicates(sample_tree.root)

    assert report.empty_files == sample_tree.empty
    assert all(g.size > 0 for g in report.groups)


def test_symlinks_are_ignored(sample_tree: SampleTree) -> None:
    report = find_duplicates(sample_tree.root)

    names = {p.name for g in report.groups for p in g.files}
    assert not any(name.startswith("link-to") for name in names)
    assert report.stats.files_scanned == len(list(walk(sample_tree.root)))
    assert not any(
        e.path.endswith(("link-to-one", "link-to-one-again")) for e in walk(sample_tree.root)
    )


def test_accepts_pre_walked_entries_and_several_roots(sample_tree: SampleTree) -> None:
    from_entries = find_duplicates(list(walk(sample_tree.root)))
    overlapping = find_duplicates([sample_tree.root, sample_tree.root / "a", sample_tree.root])

    assert group_sets(from_entries) == sample_tree.groups
    assert group_sets(overlapping) == sample_tree.groups
    assert overlapping.stats.files_scanned == from_entries.stats.files_scanned


def test_min_size_skips_small_files(sample_tree: SampleTree) -> None:
    report = find_duplicates(sample_tree.root, min_size=1024)

    assert [len(g.files) for g in report.groups] == [2]
    assert report.groups[0].size == sample_tree.large_size
    assert report.empty_files == []


def test_other_algorithm_same_groups(sample_tree: SampleTree) -> None:
    report = find_duplicates(sample_tree.root, algorithm="blake2b")

    assert group_sets(report) == sample_tree.groups
    assert report.algorithm == "blake2b"
    assert len(report.groups[0].hash) == 64


def test_missing_root_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="was not found"):
        find_duplicates(tmp_path / "nope")


def test_progress_reports_growing_counts(sample_tree: SampleTree) -> None:
    calls: list[tuple[int, int]] = []
    report = find_duplicates(sample_tree.root, progress=lambda f, b: calls.append((f, b)))

    assert calls == sorted(calls)
    assert calls[-1] == (report.stats.files_scanned, report.stats.bytes_read)


def test_cancel_mid_hashing_keeps_finished_work(tmp_path: Path, cache: HashCache) -> None:
    root = tmp_path / "many"
    root.mkdir()
    for i in range(600):  # one size group, three worker batches of 256 files
        (root / f"f{i:03d}").write_bytes(i.to_bytes(2, "big") * 8)
    hashed = False

    def progress(files: int, nbytes: int) -> None:
        nonlocal hashed
        hashed = nbytes > 0

    with pytest.raises(Cancelled):
        find_duplicates(
            root, cache=cache, progress=progress, should_cancel=lambda: hashed, workers=1
        )

    saved = len(cache)
    assert 0 < saved < 600
    report = find_duplicates(root, cache=cache)
    assert report.stats.cache_hits == saved
    assert report.stats.reads == 600 - saved
    assert report.groups == []


def test_cancel_during_walk(tmp_path: Path) -> None:
    for i in range(200):
        (tmp_path / f"d{i}").mkdir()
    polls = 0

    def should_cancel() -> bool:
        nonlocal polls
        polls += 1
        return True

    with pytest.raises(Cancelled):
        find_duplicates(tmp_path, should_cancel=should_cancel)
    assert polls == 1


def test_vanished_file_is_an_error_not_a_crash(fresh_tree: SampleTree) -> None:
    entries = list(walk(fresh_tree.root))
    gone = fresh_tree.root / "b" / "one-copy.txt"
    gone.unlink()

    report = find_duplicates(entries)

    assert report.errors == [f"{gone}: No such file or directory"]
    root = fresh_tree.root
    assert group_sets(report) == {
        frozenset({root / "a" / "one.txt", root / "c" / "deep" / "one-again.txt"}),
        frozenset({root / "big1.bin", root / "sub" / "big2.bin"}),
    }
