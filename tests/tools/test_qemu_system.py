"""A hand-assembled boot sector boots in QEMU and prints on COM1."""

from pathlib import Path

from diskvault.tools import ipxe
from support.boot_sectors import MARKER, marker_sector, write_disk
from support.qemu_vm import QemuVM


def test_marker_disk_boots_from_a_local_drive(tmp_path: Path) -> None:
    disk = write_disk(tmp_path / "m.img", marker_sector())
    log = tmp_path / "serial.log"
    args = ["-accel", "tcg", "-m", "32", "-display", "none", "-nodefaults", "-no-user-config"]
    args += ["-serial", f"file:{log}", "-drive", f"file={disk},format=raw,if=ide"]
    with QemuVM(args, serial_log=log) as vm:
        vm.wait_for_serial(MARKER, timeout=60)
        assert MARKER in vm.serial()


def test_ipxe_scripts_refuse_injection() -> None:
    script = ipxe.sanboot_script(
        server="10.0.2.2", port=3261, lun=1, iqn="iqn.2026-01.io.diskvault:m1",
        initiator_iqn="iqn.2026-01.io.diskvault:init", banner="hi && shell ${x}",
    )  # fmt: skip
    assert "sanboot iscsi:10.0.2.2::3261:1:iqn.2026-01.io.diskvault:m1" in script
    assert "hi ?? shell ??x?" in script
    default_port = ipxe.sanboot_url("10.0.2.2", 3260, 1, "iqn.2026-01.io.diskvault:m1")
    assert default_port == "iscsi:10.0.2.2:::1:iqn.2026-01.io.diskvault:m1"
    try:
        ipxe.sanboot_url("10.0.2.2\nshell", 3260, 1, "iqn.x")
    except ValueError as exc:
        assert "unsafe server" in str(exc)
    else:
        raise AssertionError("newline in server accepted")
    retry = ipxe.retry_script("no machine for 52:54:00:00:00:01\nshell", 30)
    assert "\nshell" not in retry and "sleep 30" in retry
    snippet = ipxe.dnsmasq_proxy_snippet(server="192.0.2.10", http_port=8080, tftp_root="/srv")
    assert "dhcp-range=192.0.2.10,proxy" in snippet and "/boot/ipxe?mac=${net0/mac}" in snippet
