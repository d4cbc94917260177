"""Scan a location: every file's key, size, mtime and content category."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from diskvault.organizer.categorize import Category, categorize
from diskvault.organizer.locations import is_reserved
from diskvault.storage import StorageFile, StorageProvider

Progress = Callable[[int, int], None]  # files done, bytes seen


@dataclass(frozen=True)
class Found:
    file: StorageFile
    category: Category


def scan(
    provider: StorageProvider,
    *,
    max_virtual_size: int,
    temp_dir: Path,
    progress: Progress | None = None,
    check_cancel: Callable[[], None] | None = None,
) -> Iterator[Found]:
    """Yield every regular file under the provider's root, categorized.

    The organizer's own trash and quarantine folders are left out, so a plan
    never acts on what an earlier operation set aside.
    """
    files = size = 0
    for page in provider.scan(""):
        if check_cancel is not None:
            check_cancel()
        for entry in page:
            if entry.is_dir or is_reserved(entry.key):
                continue
            found = categorize(
                provider, entry, max_virtual_size=max_virtual_size, temp_dir=temp_dir
            )
            files += 1
            size += entry.size
            if progress is not None:
                progress(files, size)
            yield Found(entry, found)
