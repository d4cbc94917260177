"""The reconciler against real tgtds: the shared one, an unreachable one, a managed one."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from diskvault.config import Settings
from diskvault.db.engine import session_factory
from diskvault.jobs.scheduler import PERIODIC
from diskvault.targets import manager, service
from diskvault.targets.backends import TgtBackend
from diskvault.targets.models import Target, TargetStatus
from diskvault.targets.reconcile import reconcile
from diskvault.tools.tgt import TgtdServer
from support.iscsi import compare_lun
from support.targets_tgtd import (
    INITIATOR,
    delete_all_targets,
    free_control_port,
    free_tcp_port,
    kill_tgtd,
    target_settings,
    tgtd_pid,
    write_known_image,
)


@pytest.fixture
def tsettings(tmp_path: Path, db_url: str, tgtd: TgtdServer) -> Settings:
    return target_settings(
        tmp_path / "data", db_url, TGT_CONTROL_PORT=tgtd.control_port, ISCSI_PORTAL=tgtd.portal
    )


@pytest.fixture
def db(tsettings: Settings) -> Iterator[Session]:
    session = session_factory(tsettings.DATABASE_URL)()
    yield session
    delete_all_targets(session, tsettings)
    session.close()


@pytest.fixture
def disk(tsettings: Settings) -> Path:
    path = tsettings.writeback_dir / "disk.raw"
    write_known_image(path)
    return path


def iqns(backend: TgtBackend) -> set[str]:
    return {t.iqn for t in backend.list_targets()}


def test_is_a_periodic_task_per_node(tsettings: Settings) -> None:
    from diskvault.targets import tasks  # noqa: F401 - registers the periodic task

    task = PERIODIC["targets-reconcile"]
    assert task.per_node
    assert task.interval_s(tsettings) == tsettings.TARGET_RECONCILE_INTERVAL_S


def test_recreates_missing_and_removes_owned_strays_only(
    db: Session, tsettings: Settings, disk: Path, tgt_backend: TgtBackend, tgtd: TgtdServer
) -> None:
    kept = service.create_target(
        db, tsettings, name="kept", path=str(disk), chap=("rc-user", "rc-secret-123")
    )
    lost = service.create_target(db, tsettings, name="lost", path=str(disk))
    tgt_backend.delete_target(lost.iqn)
    stray = service.owned_prefix(tsettings) + "stray"
    foreign = f"iqn.2024-01.com.example:foreign-{tsettings.IQN_DOMAIN.rsplit('.', 1)[1]}"
    tgt_backend.create_target(stray)
    tgt_backend.create_target(foreign)
    try:
        report = reconcile(tsettings)
        assert report.created == [lost.iqn]
        assert report.removed == [stray]
        present = iqns(tgt_backend)
        assert {kept.iqn, lost.iqn, foreign} <= present
        assert stray not in present
        assert compare_lun(tgtd.portal, lost.iqn, 1, disk, INITIATOR)
        # A second pass finds nothing to do.
        again = reconcile(tsettings)
        assert (again.created, again.removed, again.failed) == ([], [], {})
    finally:
        tgt_backend.delete_target(foreign)


def test_replaces_a_target_that_serves_the_wrong_file(
    db: Session, tsettings: Settings, disk: Path, tgt_backend: TgtBackend, tgtd: TgtdServer
) -> None:
    target = service.create_target(db, tsettings, name="wrong", path=str(disk))
    other = write_known_image(disk.with_name("other.raw"), seed=1)
    tgt_backend.delete_target(target.iqn)
    store = tgt_backend.create_backstore("other", str(disk.with_name("other.raw")))
    tgt_backend.create_target(target.iqn)
    tgt_backend.create_lun(target.iqn, 1, store)
    tgt_backend.create_acl(target.iqn, None, None)
    assert other != disk.read_bytes()
    assert reconcile(tsettings).created == [target.iqn]
    assert compare_lun(tgtd.portal, target.iqn, 1, disk, INITIATOR)


def test_fresh_pending_rows_are_left_alone_stale_ones_finished(
    db: Session, tsettings: Settings, disk: Path, tgt_backend: TgtBackend
) -> None:
    target = service.create_target(db, tsettings, name="pending", path=str(disk))
    tgt_backend.delete_target(target.iqn)
    target.status = TargetStatus.PENDING
    db.commit()
    assert reconcile(tsettings).created == []
    assert target.iqn not in iqns(tgt_backend)
    old = datetime.now(UTC) - timedelta(hours=1)
    db.execute(update(Target).where(Target.id == target.id).values(updated_at=old))
    db.commit()
    assert reconcile(tsettings).created == [target.iqn]
    db.refresh(target)
    assert target.status == TargetStatus.ACTIVE


def test_unreachable_backend_marks_targets_inactive(
    db: Session, tsettings: Settings, disk: Path
) -> None:
    target = service.create_target(db, tsettings, name="down", path=str(disk))
    down = tsettings.model_copy(update={"TGT_CONTROL_PORT": free_control_port()})
    report = reconcile(down)
    assert report.backend_down and "no tgtd answers" in report.backend_down
    db.refresh(target)
    assert target.status == TargetStatus.INACTIVE
    assert target.error and "no tgtd answers" in target.error
    reconcile(tsettings)
    db.refresh(target)
    assert (target.status, target.error) == (TargetStatus.ACTIVE, None)


def test_managed_tgtd_is_restarted_after_sigkill_and_targets_come_back(
    tmp_path: Path, db_url: str
) -> None:
    port = free_control_port()
    portal = f"127.0.0.1:{free_tcp_port()}"
    settings = target_settings(
        tmp_path / "data", db_url, TGT_MANAGE=True, TGT_CONTROL_PORT=port, ISCSI_PORTAL=portal
    )
    disk = settings.writeback_dir / "disk.raw"
    write_known_image(disk)
    session = session_factory(settings.DATABASE_URL)()
    try:
        assert tgtd_pid(port) is None
        target = service.create_target(  # starts tgtd on demand
            session, settings, name="managed", path=str(disk), chap=("mg-user", "mg-secret-123")
        )
        first = tgtd_pid(port)
        assert first is not None
        kill_tgtd(port)
        report = reconcile(settings)
        assert report.started_tgtd and report.created == [target.iqn]
        second = tgtd_pid(port)
        assert second is not None and second != first
        chap = service.chap_of(settings, target)
        assert compare_lun(portal, target.iqn, 1, disk, INITIATOR, chap)
        delete_all_targets(session, settings)
    finally:
        session.close()
        manager.stop_tgtd(settings)
    assert tgtd_pid(port) is None
