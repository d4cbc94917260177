"""OpenStack's maintained inspector (oslo.utils ``format_inspector``, what Glance, Nova and
Cinder trust after their CVEs) as a differential oracle for diskvault's own.

Over a corpus of every supported format and hostile variants, both must agree on the
format and on safety, or diskvault must be the stricter one. Every disagreement and
its resolution is recorded in docs/images.md ("Inspector oracle"); ``DIFFERENT_BUT_SAFE``
lists the cases where both accept a file and name it differently, each with why.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from diskvault.images.errors import UnsafeImage
from diskvault.images.inspect import Inspection, inspect_file
from support.image_corpus import build

format_inspector = pytest.importorskip("oslo_utils.imageutils.format_inspector")

LIMIT = 1 << 40
# oslo's names -> diskvault's; a partition table is oslo's "gpt" (MBR included).
NAMES = {"vhd": "vpc", "gpt": "raw"}
# Both accept and name the file differently: (oslo says, diskvault says) and why.
DIFFERENT_BUT_SAFE = {
    # A fixed VHD is raw data and a 512-byte footer; oslo reads only headers, so it
    # sees the data (raw, or the guest's partition table). diskvault reads the
    # footer too and keeps it out of the disk, as qemu does with -f vpc.
    "fixed.vpc": ("raw", "vpc"),
    "mbr-fixed.vpc": ("raw", "vpc"),
}
# What diskvault must say for each file (None: refused).
EXPECTED = {
    "plain.raw": "raw",
    "plain.qcow2": "qcow2",
    "plain.vhdx": "vhdx",
    "plain.vdi": "vdi",
    "plain.vpc": "vpc",
    "plain.vmdk": "vmdk",
    "fixed.vpc": "vpc",
    "stream.vmdk": "vmdk",
    "gpt.raw": "raw",
    "mbr.raw": "raw",
    "mbr-fixed.vpc": "vpc",
    "plain.iso": "iso",
    "qcow2-after-sector.raw": "raw",  # a qcow2 header 512 bytes in: qemu probes it as raw too
}


def oslo(path: Path) -> tuple[str | None, bool]:
    """oslo's format (mapped to diskvault's names) and whether it passes its safety check."""
    logging.disable(logging.CRITICAL)  # its failures are logged as warnings
    try:
        found = format_inspector.detect_file_format(str(path))
        if found is None:
            return None, False
        found.safety_check()
        return NAMES.get(found.NAME, found.NAME), True
    except (format_inspector.ImageFormatError, format_inspector.SafetyCheckFailed):
        return None, False
    finally:
        logging.disable(logging.NOTSET)


def diskvault(path: Path) -> Inspection | None:
    try:
        return inspect_file(path, max_virtual_size=LIMIT)
    except UnsafeImage:
        return None


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build(tmp_path_factory.mktemp("corpus"))


def test_diskvault_agrees_with_the_oracle_or_is_stricter(corpus: dict[str, Path]) -> None:
    looser = []
    for name, path in corpus.items():
        theirs, their_safe = oslo(path)
        ours = diskvault(path)
        if ours is None or not their_safe:
            if ours is not None:
                looser.append(f"{name}: oslo refuses it, diskvault accepts it as {ours.format}")
            continue
        if ours.format != theirs and DIFFERENT_BUT_SAFE.get(name) != (theirs, ours.format):
            looser.append(f"{name}: oslo says {theirs}, diskvault says {ours.format}")
    assert looser == []


def test_the_corpus_verdicts(corpus: dict[str, Path]) -> None:
    """What diskvault decides for each file: the benign ones by format, every other refused."""
    verdicts = {name: getattr(diskvault(path), "format", None) for name, path in corpus.items()}
    assert verdicts == {name: EXPECTED.get(name) for name in corpus}
    partition_tables = {
        name: diskvault(corpus[name]).details.get("partition_table")  # type: ignore[union-attr]
        for name in ("gpt.raw", "mbr.raw", "mbr-fixed.vpc")
    }
    assert partition_tables == {"gpt.raw": "gpt", "mbr.raw": "mbr", "mbr-fixed.vpc": "mbr"}


def test_the_oracle_sees_the_hostile_files_too(corpus: dict[str, Path]) -> None:
    """The oracle is not asleep: it refuses what makes qemu open other files."""
    for name in ("backing.qcow2", "datafile.qcow2", "extent-abs.vmdk", "qcow2-iso.qcow2"):
        assert oslo(corpus[name]) == (None, False), name
