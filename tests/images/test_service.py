from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from diskvault.config import Settings
from diskvault.db.engine import session_scope
from diskvault.db.migrate import upgrade
from diskvault.images import engine, service, staging, tasks
from diskvault.images.errors import (
    ImageBusy,
    ImageInUse,
    ResizeRefused,
    ResizeTooLarge,
    ShrinkRefused,
)
from diskvault.images.models import Image, ImageStatus
from diskvault.images.store import ImageStore


@pytest.fixture
def db(settings: Settings) -> Settings:
    upgrade(settings.DATABASE_URL)
    return settings


def make(settings: Settings, **values: object) -> str:
    with session_scope(settings.DATABASE_URL) as s:
        image = Image(name="x", details={"node": settings.NODE}, **values)
        s.add(image)
        s.flush()
        return image.id


def load(settings: Settings, image_id: str) -> Image:
    with session_scope(settings.DATABASE_URL) as s:
        image = s.get(Image, image_id)
        assert image is not None
        s.expunge(image)
        return image


def test_usage_checks_block_delete_until_released(db: Settings) -> None:
    image_id = make(db, status=ImageStatus.READY)
    users: dict[str, str] = {image_id: "machine m1 boots it"}

    def check(session: object, iid: str) -> str | None:
        return users.get(iid)

    assert service.register_usage_check(check) is check
    service.register_usage_check(check)  # registering twice is harmless
    try:
        with session_scope(db.DATABASE_URL) as s:
            assert service.usage(s, image_id) == "machine m1 boots it"
            with pytest.raises(ImageInUse, match="machine m1 boots it"):
                service.delete(s, db, image_id)
            # convert and resize replace the file its users read
            with pytest.raises(ImageInUse):
                service.request_convert(s, db, image_id, "qcow2", owner="admin")
            with pytest.raises(ImageInUse):
                service.request_resize(s, db, image_id, 1 << 30, force=False, owner="admin")
        users.clear()
        with session_scope(db.DATABASE_URL) as s:
            service.delete(s, db, image_id)
            assert s.get(Image, image_id) is None
    finally:
        service._USAGE_CHECKS.remove(check)


def test_busy_images_cannot_be_deleted_converted_or_resized(db: Settings) -> None:
    image_id = make(db, status=ImageStatus.CONVERTING, job_id="j1", format="vhdx")
    with session_scope(db.DATABASE_URL) as s:
        with pytest.raises(ImageBusy, match="cancel its job first"):
            service.delete(s, db, image_id)
        with pytest.raises(ImageBusy):
            service.request_convert(s, db, image_id, "raw", owner="admin")
        with pytest.raises(ImageBusy):
            service.request_resize(s, db, image_id, 1 << 30, force=False, owner="admin")


def test_resize_rules(db: Settings) -> None:
    vhdx = load(db, make(db, status=ImageStatus.READY, format="vhdx", virtual_size=1 << 30))
    with pytest.raises(ResizeRefused, match="convert to raw or qcow2"):
        service.check_resize(db, vhdx, 2 << 30, False)
    raw = load(db, make(db, status=ImageStatus.READY, format="raw", virtual_size=1 << 30))
    service.check_resize(db, raw, 2 << 30, False)
    with pytest.raises(ShrinkRefused, match="force"):
        service.check_resize(db, raw, 1 << 29, False)
    with pytest.raises(ResizeTooLarge, match="over the size limit"):
        service.check_resize(db, raw, db.MAX_VIRTUAL_SIZE + 512, False)


def test_stale_uploads_become_errors(db: Settings) -> None:
    fresh = make(db, status=ImageStatus.UPLOADING)
    stale = make(db, status=ImageStatus.UPLOADING)
    partial = staging.partial_path(db, stale)
    partial.write_bytes(b"half")
    old = time.time() - service.STALE_UPLOAD_S - 60
    os.utime(partial, (old, old))
    staging.partial_path(db, fresh).write_bytes(b"still coming")
    assert tasks.fail_stale_uploads(db) == 1
    assert load(db, stale).status == ImageStatus.ERROR and not partial.exists()
    assert load(db, fresh).status == ImageStatus.UPLOADING


def test_failure_keeps_a_verified_source_and_ignores_stale_jobs(db: Settings) -> None:
    image_id = make(db, status=ImageStatus.CONVERTING, job_id="job-2", format="raw")
    staged = staging.staged_path(db, image_id)
    staged.write_bytes(b"\1" * 4096)
    leftover = db.temp_dir / f"{image_id}-job-2.qcow2.partial"
    leftover.write_bytes(b"partial")
    # an older job's late failure must not touch the image the newer job owns
    engine.settle_failure(db, "job-1", {"image_id": image_id}, "late")
    assert load(db, image_id).status == ImageStatus.CONVERTING
    engine.settle_failure(db, "job-2", {"image_id": image_id, "target_format": "qcow2"}, "boom")
    image = load(db, image_id)
    assert image.status == ImageStatus.ERROR
    assert image.error is not None and image.error.startswith("conversion to qcow2 failed: boom")
    assert not staged.exists() and not leftover.exists()
    assert image.storage_key is not None
    kept = ImageStore(db).local_path(image.storage_key)
    assert kept is not None and kept.read_bytes() == b"\1" * 4096


def test_unverified_bytes_are_dropped_on_failure(db: Settings, tmp_path: Path) -> None:
    image_id = make(db, status=ImageStatus.PROCESSING, job_id="j")
    staged = staging.staged_path(db, image_id)
    staged.write_bytes(b"unverified")
    engine.settle_failure(db, "j", {"image_id": image_id}, "qemu-img timed out")
    image = load(db, image_id)
    assert image.status == ImageStatus.ERROR and image.storage_key is None
    assert image.error == "processing failed: qemu-img timed out"
    assert not staged.exists()


def test_a_failing_usage_check_refuses_the_delete(db: Settings) -> None:
    image_id = make(db, status=ImageStatus.READY)

    def broken(session: object, iid: str) -> str | None:
        raise RuntimeError("its table is missing")

    service.register_usage_check(broken)
    try:
        with session_scope(db.DATABASE_URL) as s, pytest.raises(ImageInUse, match="could not tell"):
            service.delete(s, db, image_id)
    finally:
        service._USAGE_CHECKS.remove(broken)
    assert load(db, image_id).status == ImageStatus.READY
