"""The world of the restore tests: guest disks backed up with the backup engine.

``gpt`` has eight partitions (ext4 with a 100 MiB file, xfs, btrfs, FAT, NTFS,
LUKS, a broken ext4, a blank one) and three restore points; ``flat`` is a
partitionless ext4 disk with two. ``index.php`` (ext4) and ``NOTE.TXT`` (FAT)
change between points; ``version.txt`` changes on ``flat``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from diskvault.backups import service as backups
from diskvault.config import Settings
from diskvault.db.engine import session_scope
from support.backups_env import add_repo, add_source, backup, make_settings
from support.restore_disks import (
    GuestDisk,
    MiB,
    broken_ext4_image,
    btrfs_image,
    data_tree,
    ext4_image,
    fat_image,
    gpt_disk,
    index_php,
    legacy_names,
    luks_image,
    make_big,
    note_txt,
    ntfs_image,
    rewrite_ext4_file,
    rewrite_fat_file,
    root_tree,
    sha256,
    xfs_image,
)
from support.server import ADMIN_PASSWORD


@dataclass
class World:
    settings: Settings
    root: Path
    gpt: GuestDisk
    flat: GuestDisk
    gpt_points: list[str]
    flat_points: list[str]
    big_sha: str
    chain_sums: dict[Path, str]

    def chain(self, backup_id: str) -> list[Path]:
        with session_scope(self.settings.DATABASE_URL) as s:
            return backups.restore_point(s, backup_id).chain

    def current_sums(self) -> dict[Path, str]:
        return {p: sha256(p) for p in self.chain_sums}


def build_flat(work: Path, version: int) -> Path:
    tree = data_tree(work / f"flat-tree-{version}", "flat")
    (tree / "version.txt").write_text(f"flat version {version}\n")
    legacy_names(tree / "legacy")
    return ext4_image(work / f"flat-{version}.raw", tree, 32 * MiB, label="FLAT")


def build_world(root: Path) -> World:
    work = root / "work"
    (work / "fat").mkdir(parents=True)
    big = make_big(work / "big.bin")
    gpt = gpt_disk(
        root / "gpt.raw",
        {
            "ext4": ext4_image(work / "ext4.img", root_tree(work / "root", big, 1), 160 * MiB),
            "xfs": xfs_image(work / "xfs.img", data_tree(work / "xfs", "xfs")),
            "btrfs": btrfs_image(work / "btrfs.img", data_tree(work / "btrfs", "btrfs")),
            "fat": fat_image(work / "fat.img", work / "fat", 1),
            "ntfs": ntfs_image(work / "ntfs.img", data_tree(work / "ntfs", "ntfs", links=False)),
            "luks": luks_image(work / "luks.img"),
            "broken": broken_ext4_image(work / "broken.img", work),
            "blank": MiB,
        },
    )
    for image in work.glob("*.img"):
        image.unlink()  # the disk has them now
    flat = GuestDisk(build_flat(work, 1))
    # The tests run the idle sweep themselves; the app's scheduler must not race them.
    settings = make_settings(
        root / "data", ADMIN_PASSWORD=ADMIN_PASSWORD, RESTORE_SWEEP_INTERVAL_S=86400.0
    )
    repo = add_repo(settings, "local", root / "repo")
    add_source(settings, "gpt", "raw", path=str(gpt.path))
    add_source(settings, "flat", "raw", path=str(flat.path))
    gpt_points = [backup(settings, "gpt", repo, "full")]
    flat_points = [backup(settings, "flat", repo, "full")]
    for version in (2, 3):
        rewrite_ext4_file(gpt, "ext4", "var/www/index.php", index_php(version))
        rewrite_fat_file(gpt, "fat", "NOTE.TXT", note_txt(version), work / "fat")
        gpt_points.append(backup(settings, "gpt", repo, "incremental"))
    build_flat(work, 2).rename(flat.path)
    flat_points.append(backup(settings, "flat", repo, "incremental"))
    w = World(settings, root, gpt, flat, gpt_points, flat_points, sha256(big), {})
    files = {p for b in (gpt_points[-1], flat_points[-1]) for p in w.chain(b)}
    w.chain_sums = {p: sha256(p) for p in files}
    big.unlink()
    return w
