"""TgtBackend against a real tgtd, read back through libiscsi (iscsi-ls, qemu-img, qemu-io)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from diskvault.targets.backends import BACKENDS, Chap, LunInfo, TgtBackend, get_backend
from diskvault.targets.errors import (
    BackendUnavailable,
    BadBackendName,
    ChapUserInUse,
    InvalidBackstore,
    InvalidChap,
    InvalidIqn,
    InvalidLun,
    InvalidPortal,
    TargetBusy,
    TargetExists,
    TargetNotFound,
)
from diskvault.tools.tgt import MAX_CONTROL_PORT, SOCKET_DIR, TgtdServer
from support.iscsi import IscsiError, IscsiSession, compare_lun, iscsi_ls, read_lun

INITIATOR = "iqn.2024-01.com.example:initiator-a"
OTHER_INITIATOR = "iqn.2024-01.com.example:initiator-b"
CHAP = Chap("diskvault-in", "s3cret-in-1234")


def serve(
    backend: TgtBackend, iqn: str, disk: Path, initiator: str | None, chap: Chap | None = None
) -> None:
    store = backend.create_backstore("disk", str(disk))
    backend.create_target(iqn)
    backend.create_lun(iqn, 1, store)
    backend.create_acl(iqn, initiator, chap)


def test_lun_reads_back_identical(
    tgt_backend: TgtBackend, tgtd: TgtdServer, iqn: str, disk_image: Path, tmp_path: Path
) -> None:
    serve(tgt_backend, iqn, disk_image, INITIATOR)
    host, _, port = tgtd.portal.rpartition(":")
    tgt_backend.enable_portal(iqn, host, int(port))

    found = {t.iqn: t for t in iscsi_ls(tgtd.portal, INITIATOR)}
    assert [(lun.lun, lun.type) for lun in found[iqn].luns] == [
        (0, "STORAGE_ARRAY_CONTROLLER"),
        (1, "DIRECT_ACCESS"),
    ]
    out = read_lun(tgtd.portal, iqn, 1, tmp_path / "out.raw", INITIATOR)
    compared = subprocess.run(
        ["qemu-img", "compare", "-f", "raw", "-F", "raw", str(disk_image), str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert compared.returncode == 0, compared.stdout + compared.stderr
    assert out.read_bytes() == disk_image.read_bytes()


def test_other_initiator_is_refused(
    tgt_backend: TgtBackend, tgtd: TgtdServer, iqn: str, disk_image: Path, tmp_path: Path
) -> None:
    serve(tgt_backend, iqn, disk_image, INITIATOR)
    assert iqn not in {t.iqn for t in iscsi_ls(tgtd.portal, OTHER_INITIATOR)}
    with pytest.raises(IscsiError, match="Failed to log in"):
        read_lun(tgtd.portal, iqn, 1, tmp_path / "out.raw", OTHER_INITIATOR)
    assert not (tmp_path / "out.raw").exists()
    assert not (tmp_path / "out.raw.partial").exists()
    with pytest.raises(IscsiError, match="Target not found"):
        IscsiSession(tgtd.portal, iqn, 1, OTHER_INITIATOR).start()


def test_open_acl_admits_anyone_until_an_initiator_is_named(
    tgt_backend: TgtBackend, tgtd: TgtdServer, iqn: str, disk_image: Path
) -> None:
    serve(tgt_backend, iqn, disk_image, None)
    assert compare_lun(tgtd.portal, iqn, 1, disk_image, OTHER_INITIATOR)
    tgt_backend.create_acl(iqn, INITIATOR, None)
    (info,) = [t for t in tgt_backend.list_targets() if t.iqn == iqn]
    assert not info.open_access
    assert info.initiators == [INITIATOR]
    with pytest.raises(IscsiError):
        compare_lun(tgtd.portal, iqn, 1, disk_image, OTHER_INITIATOR)


def test_chap(tgt_backend: TgtBackend, tgtd: TgtdServer, iqn: str, disk_image: Path) -> None:
    serve(tgt_backend, iqn, disk_image, INITIATOR, CHAP)
    with pytest.raises(IscsiError, match="Authentication failure"):
        compare_lun(tgtd.portal, iqn, 1, disk_image, INITIATOR)
    wrong = Chap(CHAP.user, "not-the-secret")
    with pytest.raises(IscsiError, match="Authentication failure"):
        compare_lun(tgtd.portal, iqn, 1, disk_image, INITIATOR, wrong)
    assert compare_lun(tgtd.portal, iqn, 1, disk_image, INITIATOR, CHAP)
    found = {t.iqn: t for t in iscsi_ls(tgtd.portal, INITIATOR, CHAP)}
    assert [lun.lun for lun in found[iqn].luns] == [0, 1]


def test_mutual_chap_and_account_cleanup(
    tgt_backend: TgtBackend, iqn: str, disk_image: Path
) -> None:
    chap = Chap("mutual-in", "in-secret-1234", "mutual-out", "out-secret-1234")
    serve(tgt_backend, iqn, disk_image, INITIATOR, chap)
    (info,) = [t for t in tgt_backend.list_targets() if t.iqn == iqn]
    assert info.chap_users == ["mutual-in"]
    assert info.mutual_chap_user == "mutual-out"
    tgt_backend.delete_target(iqn)
    accounts = tgt_backend.tgtadm.show_accounts()
    assert "mutual-in" not in accounts
    assert "mutual-out" not in accounts


def test_chap_user_of_another_target_is_refused(
    tgt_backend: TgtBackend, iqn: str, disk_image: Path
) -> None:
    serve(tgt_backend, iqn, disk_image, INITIATOR, Chap("shared-user", "first-secret-12"))
    other = iqn + "-2"
    tgt_backend.create_target(other)
    try:
        with pytest.raises(ChapUserInUse, match=iqn):
            tgt_backend.create_acl(other, INITIATOR, Chap("shared-user", "second-secret-1"))
    finally:
        tgt_backend.delete_target(other)
    # The same target may re-key its own user (a reconcile after a secret change).
    tgt_backend.create_acl(iqn, INITIATOR, Chap("shared-user", "third-secret-12"))
    assert tgt_backend.tgtadm.show_accounts().count("shared-user") == 1


def test_status_delete_refusal_and_force(
    tgt_backend: TgtBackend, tgtd: TgtdServer, iqn: str, disk_image: Path
) -> None:
    serve(tgt_backend, iqn, disk_image, INITIATOR, CHAP)
    assert not tgt_backend.get_target_status(iqn).connected
    with IscsiSession(tgtd.portal, iqn, 1, INITIATOR, CHAP):
        status = tgt_backend.get_target_status(iqn)
        assert status.initiators == [INITIATOR]
        assert status.sessions[0].addresses == ["127.0.0.1"]
        with pytest.raises(TargetBusy, match=INITIATOR):
            tgt_backend.delete_target(iqn)
        assert iqn in {t.iqn for t in tgt_backend.list_targets()}
        tgt_backend.delete_target(iqn, force=True)
        assert iqn not in {t.iqn for t in tgt_backend.list_targets()}


def test_delete_after_logout(
    tgt_backend: TgtBackend, tgtd: TgtdServer, iqn: str, disk_image: Path
) -> None:
    serve(tgt_backend, iqn, disk_image, INITIATOR)
    with IscsiSession(tgtd.portal, iqn, 1, INITIATOR):
        assert tgt_backend.get_target_status(iqn).connected
    # tgtd tears the nexus down asynchronously after the logout.
    deadline = time.monotonic() + 10
    while tgt_backend.get_target_status(iqn).connected and time.monotonic() < deadline:
        time.sleep(0.05)
    tgt_backend.delete_target(iqn)
    with pytest.raises(TargetNotFound):
        tgt_backend.get_target_status(iqn)


def test_list_targets(
    tgt_backend: TgtBackend, tgtd: TgtdServer, iqn: str, disk_image: Path
) -> None:
    serve(tgt_backend, iqn, disk_image, INITIATOR, CHAP)
    (info,) = [t for t in tgt_backend.list_targets() if t.iqn == iqn]
    assert info.luns == [LunInfo(1, str(disk_image))]
    assert info.initiators == [INITIATOR]
    assert not info.open_access
    assert info.chap_users == [CHAP.user]
    assert info.mutual_chap_user is None
    assert info.portals == [tgtd.portal]
    assert info.tid is not None and info.tid > 0


def test_lun_rules(tgt_backend: TgtBackend, iqn: str, disk_image: Path) -> None:
    store = tgt_backend.create_backstore("disk", str(disk_image))
    tgt_backend.create_target(iqn)
    with pytest.raises(InvalidLun, match="LUN 0 for its controller"):
        tgt_backend.create_lun(iqn, 0, store)
    with pytest.raises(InvalidLun):
        tgt_backend.create_lun(iqn, 256, store)
    tgt_backend.create_lun(iqn, 1, store)
    with pytest.raises(TargetExists):
        tgt_backend.create_lun(iqn, 1, store)
    with pytest.raises(TargetNotFound):
        tgt_backend.create_lun(iqn + "-missing", 1, store)


def test_backstore_checks(tgt_backend: TgtBackend, tmp_path: Path, disk_image: Path) -> None:
    assert tgt_backend.create_backstore("disk", str(disk_image)).size == disk_image.stat().st_size
    with pytest.raises(InvalidBackstore, match="No such file"):
        tgt_backend.create_backstore("disk", str(tmp_path / "missing.raw"))
    with pytest.raises(InvalidBackstore, match="neither"):
        tgt_backend.create_backstore("disk", str(tmp_path))
    with pytest.raises(InvalidBackstore, match="absolute"):
        tgt_backend.create_backstore("disk", "disk.raw")
    with pytest.raises(InvalidBackstore):
        tgt_backend.create_backstore("bad/name", str(disk_image))


def test_target_errors(tgt_backend: TgtBackend, iqn: str) -> None:
    tgt_backend.create_target(iqn)
    with pytest.raises(TargetExists):
        tgt_backend.create_target(iqn)
    with pytest.raises(InvalidIqn):
        tgt_backend.create_target("iqn.2024-01.com.Example:upper")
    with pytest.raises(InvalidIqn):
        tgt_backend.create_acl(iqn, "not-an-iqn", None)
    with pytest.raises(InvalidChap):
        tgt_backend.create_acl(iqn, INITIATOR, Chap("same", "secret-one-123", "same", "secret-2"))
    with pytest.raises(TargetNotFound):
        tgt_backend.delete_target(iqn + "-missing")


def test_enable_portal_checks_tgtd_portal(
    tgt_backend: TgtBackend, tgtd: TgtdServer, iqn: str
) -> None:
    tgt_backend.create_target(iqn)
    with pytest.raises(InvalidPortal, match=f"listens on {tgtd.portal}"):
        tgt_backend.enable_portal(iqn, "127.0.0.1", 1)
    with pytest.raises(InvalidPortal, match="not an address of this host"):
        tgt_backend.enable_portal(iqn, "192.0.2.1", 3260)


def test_unreachable_tgtd_is_unavailable() -> None:
    port = MAX_CONTROL_PORT
    while (SOCKET_DIR / f"socket.{port}").exists():
        port -= 1
    backend = TgtBackend(control_port=port)
    with pytest.raises(BackendUnavailable, match="no tgtd answers"):
        backend.list_targets()


def test_get_backend(tgtd: TgtdServer) -> None:
    backend = get_backend("tgt", control_port=tgtd.control_port)
    assert isinstance(backend, TgtBackend)
    assert backend.name == "tgt"
    assert set(BACKENDS) == {"tgt", "lio"}
    with pytest.raises(BadBackendName, match="tgt"):
        get_backend("scst")
