"""The target service against a real tgtd, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from diskvault.config import Settings
from diskvault.db.engine import session_factory
from diskvault.errors import NotFound
from diskvault.targets import secrets, service
from diskvault.targets.backends import Chap, TgtBackend
from diskvault.targets.errors import (
    ChapUserInUse,
    InvalidBackstore,
    InvalidChap,
    InvalidIqn,
    InvalidLun,
    InvalidPortal,
    TargetBusy,
    TargetExists,
)
from diskvault.targets.models import Target, TargetStatus
from diskvault.tools.tgt import TgtdServer
from support.iscsi import IscsiError, IscsiSession, compare_lun, read_lun
from support.targets_tgtd import (
    INITIATOR,
    OTHER_INITIATOR,
    delete_all_targets,
    images_table_ready,
    insert_image,
    target_settings,
    write_known_image,
)


@pytest.fixture
def tsettings(tmp_path: Path, db_url: str, tgtd: TgtdServer) -> Settings:
    return target_settings(
        tmp_path / "data", db_url, TGT_CONTROL_PORT=tgtd.control_port, ISCSI_PORTAL=tgtd.portal
    )


@pytest.fixture
def db(tsettings: Settings, tgt_backend: TgtBackend) -> Iterator[Session]:
    session = session_factory(tsettings.DATABASE_URL)()
    yield session
    delete_all_targets(session, tsettings)
    session.close()


@pytest.fixture
def disk(tsettings: Settings) -> Path:
    path = tsettings.writeback_dir / "disk.raw"
    write_known_image(path)
    return path


def backend_iqns(backend: TgtBackend) -> set[str]:
    return {t.iqn for t in backend.list_targets()}


def test_create_serves_the_file_to_the_named_initiator(
    db: Session, tsettings: Settings, disk: Path, tgt_backend: TgtBackend, tgtd: TgtdServer
) -> None:
    target = service.create_target(
        db, tsettings, name="Lab PC 1", path=str(disk), initiators=[INITIATOR], machine_id="m1"
    )
    assert target.status == TargetStatus.ACTIVE
    assert target.iqn == f"iqn.{tsettings.IQN_DATE}.{tsettings.IQN_DOMAIN}:lab-pc-1"
    assert target.iqn.startswith(service.owned_prefix(tsettings))
    assert (target.lun, target.portal, target.node) == (1, tgtd.portal, tsettings.NODE)
    (info,) = [t for t in tgt_backend.list_targets() if t.iqn == target.iqn]
    assert info.initiators == [INITIATOR] and not info.open_access
    assert compare_lun(tgtd.portal, target.iqn, 1, disk, INITIATOR)
    with pytest.raises(IscsiError):
        compare_lun(tgtd.portal, target.iqn, 1, disk, OTHER_INITIATOR)
    assert service.get_by_machine(db, "m1").id == target.id


def test_chap_is_stored_encrypted_and_enforced(
    db: Session, tsettings: Settings, disk: Path, tgtd: TgtdServer
) -> None:
    target = service.create_target(
        db,
        tsettings,
        name="chap",
        path=str(disk),
        initiators=[INITIATOR, OTHER_INITIATOR],
        chap=("svc-user", "svc-secret-123"),
        mutual_chap=("svc-target", "svc-mutual-456"),
    )
    assert target.chap_secret is not None and "svc-secret-123" not in target.chap_secret
    assert secrets.decrypt(tsettings, target.chap_secret) == "svc-secret-123"
    chap = service.chap_of(tsettings, target)
    assert chap is not None and chap.mutual_secret == "svc-mutual-456"
    wrong = Chap("svc-user", "wrong-secret-12")
    with pytest.raises(IscsiError, match="Authentication failure"):
        compare_lun(tgtd.portal, target.iqn, 1, disk, OTHER_INITIATOR, wrong)
    plain = Chap("svc-user", "svc-secret-123")
    assert compare_lun(tgtd.portal, target.iqn, 1, disk, OTHER_INITIATOR, plain)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"iqn": "iqn.2024-01.com.Example:upper"}, InvalidIqn),
        ({"iqn": "iqn.2024-13.com.example:month"}, InvalidIqn),
        ({"initiators": ["not-an-iqn"]}, InvalidIqn),
        ({"portal": "192.0.2.1:3260"}, InvalidPortal),
        ({"portal": "localhost"}, InvalidPortal),
        ({"lun": 0}, InvalidLun),
        ({"chap": ("user", "has space")}, InvalidChap),
        ({"mutual_chap": ("only", "mutual-secret-1")}, InvalidChap),
        ({"path": "/nonexistent/disk.raw"}, InvalidBackstore),
        ({"path": "relative.raw"}, InvalidBackstore),
        ({"image_id": "feedface"}, InvalidBackstore),  # both a path and an image
    ],
)
def test_bad_input_creates_nothing(
    db: Session,
    tsettings: Settings,
    disk: Path,
    tgt_backend: TgtBackend,
    kwargs: dict[str, object],
    error: type[Exception],
) -> None:
    before = backend_iqns(tgt_backend)
    args: dict[str, object] = {"name": "bad", "path": str(disk), **kwargs}
    with pytest.raises(error):
        service.create_target(db, tsettings, **args)  # type: ignore[arg-type]
    assert backend_iqns(tgt_backend) == before
    assert db.scalars(select(Target)).all() == []


@pytest.fixture
def with_images(tsettings: Settings) -> None:
    if not images_table_ready(tsettings):
        pytest.skip("the images domain (model and migration) is not built yet")


@pytest.mark.usefixtures("with_images")
def test_serves_a_ready_raw_image(
    db: Session, tsettings: Settings, tgtd: TgtdServer, tmp_path: Path
) -> None:
    image_id, data = insert_image(db, tsettings)
    target = service.create_target(db, tsettings, name=image_id, image_id=image_id)
    assert target.image_id == image_id and target.path.startswith(str(tsettings.image_dir))
    out = read_lun(tgtd.portal, target.iqn, 1, tmp_path / "out.raw", INITIATOR)
    assert out.read_bytes() == data
    usage = service.image_usage(db, image_id)
    assert usage is not None and target.iqn in usage


@pytest.mark.usefixtures("with_images")
def test_unservable_images_are_refused(
    db: Session, tsettings: Settings, tgt_backend: TgtBackend
) -> None:
    before = backend_iqns(tgt_backend)
    busy, _ = insert_image(db, tsettings, status="CONVERTING")
    qcow2, _ = insert_image(db, tsettings, fmt="qcow2")
    for image_id, error, status in [
        ("0" * 32, NotFound, 404),
        (busy, service.ImageNotReady, 409),
        (qcow2, service.ImageNotServable, 422),
    ]:
        with pytest.raises(error) as exc:
            service.create_target(db, tsettings, name="img", image_id=image_id)
        assert exc.value.status == status
    assert backend_iqns(tgt_backend) == before
    assert db.scalars(select(Target)).all() == []


def test_duplicate_iqn_is_409(
    db: Session, tsettings: Settings, disk: Path, tgt_backend: TgtBackend
) -> None:
    first = service.create_target(db, tsettings, name="dup", path=str(disk))
    with pytest.raises(TargetExists) as exc:
        service.create_target(db, tsettings, name="DUP", path=str(disk))
    assert exc.value.status == 409
    assert [t.id for t in db.scalars(select(Target))] == [first.id]
    assert first.iqn in backend_iqns(tgt_backend)


def test_failed_acl_step_rolls_everything_back(
    db: Session, tsettings: Settings, disk: Path, tgt_backend: TgtBackend, tgtd: TgtdServer
) -> None:
    """tgt CHAP accounts are global: reusing another target's user fails at the ACL step."""
    first = service.create_target(
        db, tsettings, name="first", path=str(disk), chap=("shared", "first-secret-1")
    )
    before = backend_iqns(tgt_backend)
    with pytest.raises(ChapUserInUse):
        service.create_target(
            db, tsettings, name="second", path=str(disk), chap=("shared", "other-secret-2")
        )
    assert backend_iqns(tgt_backend) == before  # the target and its LUN were removed
    assert [t.iqn for t in db.scalars(select(Target))] == [first.iqn]
    # The first target's account was not re-keyed by the failed attempt.
    good = Chap("shared", "first-secret-1")
    assert compare_lun(tgtd.portal, first.iqn, 1, disk, INITIATOR, good)


def test_failed_portal_step_rolls_everything_back(
    db: Session, tsettings: Settings, disk: Path, tgt_backend: TgtBackend
) -> None:
    """127.0.0.1 is ours, but tgtd does not listen on port 1: the last step fails."""
    before = backend_iqns(tgt_backend)
    with pytest.raises(InvalidPortal, match="listens on"):
        service.create_target(db, tsettings, name="portal", path=str(disk), portal="127.0.0.1:1")
    assert backend_iqns(tgt_backend) == before
    assert db.scalars(select(Target)).all() == []


def test_status_delete_refusal_and_force(
    db: Session, tsettings: Settings, disk: Path, tgt_backend: TgtBackend, tgtd: TgtdServer
) -> None:
    target = service.create_target(db, tsettings, name="busy", path=str(disk))
    idle = service.get_status(db, tsettings, target.id)
    assert idle.present and idle.initiators == []
    with IscsiSession(tgtd.portal, target.iqn, 1, INITIATOR):
        live = service.get_status(db, tsettings, target.id)
        assert live.initiators == [INITIATOR]
        with pytest.raises(TargetBusy, match=INITIATOR):
            service.delete_target(db, tsettings, target.id)
        assert target.iqn in backend_iqns(tgt_backend)
        assert db.get(Target, target.id) is not None
        service.delete_target(db, tsettings, target.id, force=True)
    assert target.iqn not in backend_iqns(tgt_backend)
    assert db.get(Target, target.id) is None


def test_restart_recreates_a_lost_target(
    db: Session, tsettings: Settings, disk: Path, tgt_backend: TgtBackend, tgtd: TgtdServer
) -> None:
    target = service.create_target(
        db, tsettings, name="restart", path=str(disk), chap=("rs-user", "rs-secret-123")
    )
    tgt_backend.delete_target(target.iqn)
    assert not service.get_status(db, tsettings, target.id).present
    restarted = service.restart_target(db, tsettings, target.id)
    assert restarted.status == TargetStatus.ACTIVE
    chap = Chap("rs-user", "rs-secret-123")
    assert compare_lun(tgtd.portal, target.iqn, 1, disk, INITIATOR, chap)
