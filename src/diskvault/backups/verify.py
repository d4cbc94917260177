"""Verify a restore point: ``qemu-img check`` on every file of its chain, the
backing links against the sidecars, and every byte against the checksums
recorded at backup time, so damage is reported with its file and offset."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from diskvault.backups import chain as chains
from diskvault.backups import checksums
from diskvault.backups import repository as repo_files
from diskvault.backups.errors import PointNotReady
from diskvault.backups.keys import Key
from diskvault.backups.models import Backup, BackupChain, BackupStatus
from diskvault.config import Settings
from diskvault.tools import qemu_img

Progress = Callable[[int, int], None]


def chain_to(session: Session, point: Backup) -> list[Backup]:
    """The points whose files a restore point reads: its full up to itself."""
    points = chains.ordered(session, point.chain_id or "")
    ids = [p.id for p in points]
    return points[: ids.index(point.id) + 1] if point.id in ids else []


def _check_file(
    settings: Settings,
    image: Any,
    progress: Callable[[int], None],
    key: Key | None,
    depth: int,
) -> list[str]:
    problems: list[str] = []
    try:
        side = repo_files.read_sidecar(repo_files.sidecar_path(image))
    except (OSError, ValueError) as exc:
        return [f"{image.name}: sidecar unreadable ({exc})"]
    if not image.exists():
        return [f"{image.name}: file is missing"]
    # An encrypted qcow2 is only opened with its key, its backing files too.
    check = qemu_img.check(
        key.image(image, depth) if key else image,
        "qcow2",
        objects=key.objects() if key else (),
        binary=settings.QEMU_IMG_PATH,
    )
    if check["result"] == "corrupt":
        problems.append(
            f"{image.name}: qemu-img check found {check.get('corruptions', '?')} corruption(s)"
        )
    info = qemu_img.info(image, "qcow2", binary=settings.QEMU_IMG_PATH)
    parent = (side.get("parent") or {}).get("file")
    if info.get("backing-filename") != parent:
        problems.append(
            f"{image.name}: backing file is {info.get('backing-filename')!r}, "
            f"the sidecar says {parent!r}"
        )
    for path in repo_files.point_files(image):
        if path.suffix == ".json":
            continue
        recorded = side.get("checksums", {}).get(path.name)
        if recorded is None:
            problems.append(f"{path.name}: no checksum recorded")
            continue
        problems += [m.describe() for m in checksums.compare_file(path, recorded, progress)]
    return problems


def verify(
    session: Session, settings: Settings, point: Backup, progress: Progress | None = None
) -> dict[str, Any]:
    if point.status != BackupStatus.completed:
        raise PointNotReady(id=point.id, status=point.status.value, action="verified")
    points = chain_to(session, point)
    key = chains.point_key(session, point)
    images = [chains.image_of(session, p) for p in points]
    total = sum(i.stat().st_size for i in images if i.exists())
    done = 0

    def step(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    problems: list[str] = []
    files = []
    at = chains.now()
    for depth, (p, image) in enumerate(zip(points, images, strict=True)):
        found = _check_file(settings, image, step, key, depth)
        files.append({"file": image.name, "backup_id": p.id, "problems": found})
        problems += found
        p.verify_status = "corrupt" if problems else "ok"
        p.verified_at = at
        p.verify_detail = "; ".join(problems)[:4000] or None
    if problems and point.chain_id:
        chain = session.get(BackupChain, point.chain_id)
        if chain is not None:
            chain.broken_reason = f"verify found damage: {problems[0]}"[:4000]
    session.commit()
    return {
        "backup_id": point.id,
        "status": "corrupt" if problems else "ok",
        "problems": problems,
        "files": files,
        "bytes_read": done,
    }
