"""LioBackend. There is no configfs on the development machines, so only the
refusal is tested here; the functional tests run where configfs exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from diskvault.targets.backends import LioBackend, get_backend
from diskvault.targets.backends.lio import CONFIGFS_TARGET
from diskvault.targets.errors import BackendUnavailable, TargetError

HAS_CONFIGFS = CONFIGFS_TARGET.is_dir()
NO_CONFIGFS = f"LIO needs configfs ({CONFIGFS_TARGET}); use the tgt backend"


def test_missing_configfs_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable) as info:
        LioBackend(configfs=tmp_path / "no-configfs")
    assert isinstance(info.value, TargetError)
    assert info.value.status == 503
    assert "use the tgt backend" in info.value.message
    assert str(tmp_path / "no-configfs") in info.value.message


@pytest.mark.skipif(HAS_CONFIGFS, reason="configfs is present here")
def test_default_backend_is_refused_without_configfs() -> None:
    with pytest.raises(BackendUnavailable, match=re.escape(NO_CONFIGFS)):
        get_backend("lio")


@pytest.mark.skipif(not HAS_CONFIGFS, reason=NO_CONFIGFS)
class TestWithConfigfs:
    """Runs only on hosts with LIO; creates and removes a target named for the test."""

    IQN = "iqn.2024-01.com.example:diskvault-lio-test"
    INITIATOR = "iqn.2024-01.com.example:initiator-a"

    def test_target_lifecycle(self, tmp_path: Path) -> None:
        backend = LioBackend()
        disk = tmp_path / "disk.raw"
        disk.write_bytes(b"\x5a" * (4 * 1024 * 1024))
        store = backend.create_backstore("diskvault-lio-test", str(disk))
        backend.create_target(self.IQN)
        try:
            backend.create_lun(self.IQN, 1, store)
            backend.create_acl(self.IQN, self.INITIATOR, None)
            backend.enable_portal(self.IQN, "127.0.0.1", 3260)
            (info,) = [t for t in backend.list_targets() if t.iqn == self.IQN]
            assert [lun.lun for lun in info.luns] == [1]
            assert info.initiators == [self.INITIATOR]
            assert info.portals == ["127.0.0.1:3260"]
            assert not backend.get_target_status(self.IQN).connected
        finally:
            backend.delete_target(self.IQN, force=True)
        assert self.IQN not in {t.iqn for t in backend.list_targets()}
