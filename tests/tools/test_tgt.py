"""tgtd and tgtadm: a private tgtd per module on a free port with its own control socket."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from diskvault.tools.tgt import (
    MAX_CONTROL_PORT,
    SOCKET_DIR,
    Tgtadm,
    TgtAlreadyExists,
    TgtdServer,
    TgtdUnreachable,
    TgtError,
    TgtNoSuchObject,
    TgtStillActive,
    parse_targets,
)
from support.iscsi import IscsiSession
from support.targets_tgtd import free_control_port, free_tcp_port

IQN = "iqn.2024-01.com.example:tools-tgt"
INITIATOR = "iqn.2024-01.com.example:tools-initiator"


@pytest.fixture(scope="module")
def tgtd() -> Iterator[TgtdServer]:
    with TgtdServer(free_control_port(), portal=f"127.0.0.1:{free_tcp_port()}") as server:
        yield server


@pytest.fixture
def target(tgtd: TgtdServer, tmp_path: Path) -> Iterator[tuple[Tgtadm, int, Path]]:
    """Target tid 7 with LUN 1 on a 1 MiB file, open to any address."""
    disk = tmp_path / "lun.raw"
    disk.write_bytes(b"\xa5" * (1024 * 1024))
    adm = tgtd.tgtadm
    adm.new_target(7, IQN)
    adm.new_lun(7, 1, disk)
    adm.bind_address(7)
    yield adm, 7, disk
    adm.delete_target(7, force=True)


def test_server_lifecycle() -> None:
    server = TgtdServer(free_control_port(), portal=f"127.0.0.1:{free_tcp_port()}")
    sock_file = SOCKET_DIR / f"socket.{server.control_port}"
    with server:
        assert server.is_running()
        assert sock_file.exists()
        assert "State: ready" in server.tgtadm.show_sys()
        assert server.tgtadm.show_portals() == [server.portal]
        # A target left behind must not keep tgtd alive on stop.
        server.tgtadm.new_target(1, IQN)
    assert not server.is_running()
    assert not sock_file.exists()
    server.stop()
    with pytest.raises(TgtdUnreachable):
        server.tgtadm.show_sys()


def test_start_refuses_a_busy_portal() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        portal = f"127.0.0.1:{holder.getsockname()[1]}"
        server = TgtdServer(free_control_port(), portal=portal)
        with pytest.raises(TgtError, match="already in use"):
            server.start()
    assert not server.is_running()


def test_start_refuses_a_used_control_port(tgtd: TgtdServer) -> None:
    other = TgtdServer(tgtd.control_port, portal=f"127.0.0.1:{free_tcp_port()}")
    with pytest.raises(TgtError, match="another tgtd"):
        other.start()
    assert not other.is_running()
    assert "State: ready" in tgtd.tgtadm.show_sys()


def test_show_targets_parses_everything(target: tuple[Tgtadm, int, Path]) -> None:
    adm, tid, disk = target
    adm.bind_initiator_name(tid, INITIATOR)
    adm.new_account("tools-in", "tools-secret-1")
    adm.new_account("tools-out", "tools-secret-2")
    try:
        adm.bind_account(tid, "tools-in")
        adm.bind_account(tid, "tools-out", outgoing=True)
        (shown,) = [t for t in adm.show_targets() if t.tid == tid]
        assert shown.iqn == IQN
        assert shown.state == "ready"
        assert [(lun.lun, lun.type, lun.backing_path) for lun in shown.luns] == [
            (0, "controller", None),
            (1, "disk", str(disk)),
        ]
        assert shown.acls == ["ALL", INITIATOR]
        assert shown.accounts == ["tools-in"]
        assert shown.outgoing_account == "tools-out"
        assert shown.nexuses == []
        assert {"tools-in", "tools-out"} <= set(adm.show_accounts())

        adm.bind_account(tid, "tools-out", outgoing=True, unbind=True)
        adm.bind_initiator_name(tid, INITIATOR, unbind=True)
        adm.bind_address(tid, unbind=True)
        (shown,) = [t for t in adm.show_targets() if t.tid == tid]
        assert shown.acls == []
        assert shown.outgoing_account is None
    finally:
        adm.delete_account("tools-in")
        adm.delete_account("tools-out")
    assert "tools-in" not in adm.show_accounts()


def test_connections_and_still_active(tgtd: TgtdServer, target: tuple[Tgtadm, int, Path]) -> None:
    adm, tid, _ = target
    with IscsiSession(tgtd.portal, IQN, 1, INITIATOR):
        (conn,) = adm.show_connections(tid)
        assert (conn.initiator, conn.address, conn.cid) == (INITIATOR, "127.0.0.1", 0)
        (shown,) = [t for t in adm.show_targets() if t.tid == tid]
        assert [(n.initiator, n.addresses) for n in shown.nexuses] == [(INITIATOR, ["127.0.0.1"])]
        assert shown.nexuses[0].nexus_id == conn.session
        with pytest.raises(TgtStillActive, match="still active"):
            adm.delete_target(tid)


def test_errors_are_classified(tgtd: TgtdServer, target: tuple[Tgtadm, int, Path]) -> None:
    adm, tid, disk = target
    with pytest.raises(TgtAlreadyExists):
        adm.new_target(tid, IQN + "-other")
    with pytest.raises(TgtAlreadyExists):
        adm.new_lun(tid, 1, disk)
    with pytest.raises(TgtNoSuchObject):
        adm.delete_target(tid + 100)
    with pytest.raises(TgtNoSuchObject):
        adm.delete_account("nobody")
    adm.new_account("tools-dup", "dup-secret-123")
    try:
        with pytest.raises(TgtAlreadyExists) as exists:
            adm.new_account("tools-dup", "dup-secret-456")
        assert "dup-secret-456" not in exists.value.cmd
        assert exists.value.cmd[-2:] == ["--password", "***"]
    finally:
        adm.delete_account("tools-dup")
    with pytest.raises(TgtError) as info:
        adm.new_lun(tid, 2, disk.with_name("missing.raw"))
    assert info.value.returncode == 22
    assert info.value.stderr
    with pytest.raises(ValueError, match="0-32767"):
        Tgtadm(MAX_CONTROL_PORT + 1)


def test_parse_targets_with_two_connections() -> None:
    text = """Target 3: iqn.2024-01.com.example:multi
    System information:
        Driver: iscsi
        State: ready
    I_T nexus information:
        I_T nexus: 12
            Initiator: iqn.2024-01.com.example:host alias: host
            Connection: 0
                IP Address: 127.0.0.1
            Connection: 1
                IP Address: 127.0.0.2
    LUN information:
        LUN: 0
            Type: controller
            Backing store path: None
    Account information:
    ACL information:
        127.0.0.0/8
"""
    (target,) = parse_targets(text)
    assert target.tid == 3
    (nexus,) = target.nexuses
    assert (nexus.nexus_id, nexus.initiator) == (12, "iqn.2024-01.com.example:host")
    assert nexus.addresses == ["127.0.0.1", "127.0.0.2"]
    assert target.acls == ["127.0.0.0/8"]
    assert target.accounts == []
