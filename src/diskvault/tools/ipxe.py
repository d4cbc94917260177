"""iPXE scripts and the dnsmasq proxy-DHCP snippet that chainloads iPXE.

Pure text rendering: the boot endpoints fill in addresses and names. Values
that end up in a script are checked against a conservative character set, so
nothing from a request can inject iPXE commands.
"""

from __future__ import annotations

import re

_SAFE = re.compile(r"^[A-Za-z0-9.:_\-\[\]]+$")
_MESSAGE = re.compile(r"[^A-Za-z0-9 .,:;_()/'\-]")


def _safe(value: str, what: str) -> str:
    if not _SAFE.match(value):
        raise ValueError(f"unsafe {what} for an iPXE script: {value!r}")
    return value


def _text(message: str) -> str:
    return _MESSAGE.sub("?", message)[:200]


def sanboot_url(server: str, port: int, lun: int, iqn: str) -> str:
    """``iscsi:<server>:<protocol>:<port>:<lun>:<iqn>`` (protocol empty means TCP)."""
    port_part = "" if port == 3260 else str(port)
    return f"iscsi:{_safe(server, 'server')}::{port_part}:{lun}:{_safe(iqn, 'IQN')}"


def sanboot_script(
    *, server: str, port: int, lun: int, iqn: str, initiator_iqn: str, banner: str
) -> str:
    return (
        "#!ipxe\n"
        f"echo {_text(banner)}\n"
        f"set initiator-iqn {_safe(initiator_iqn, 'initiator IQN')}\n"
        f"sanboot {sanboot_url(server, port, lun, iqn)} || goto failed\n"
        ":failed\n"
        "echo diskvault: sanboot failed; retrying in 10 seconds\n"
        "sleep 10\n"
        "reboot\n"
    )


def retry_script(message: str, delay_s: int, chain_url: str | None = None) -> str:
    """Prints why the machine cannot boot, then retries (or chains a default menu)."""
    lines = ["#!ipxe", f"echo diskvault: {_text(message)}"]
    if chain_url:
        lines.append(f"chain {chain_url}")
    else:
        lines += [f"echo retrying in {int(delay_s)} seconds", f"sleep {int(delay_s)}", "reboot"]
    return "\n".join(lines) + "\n"


def dnsmasq_proxy_snippet(*, server: str, http_port: int, tftp_root: str) -> str:
    """Proxy-DHCP: keeps the existing DHCP server, adds PXE boot pointing at us.

    Legacy PXE ROMs get iPXE over TFTP first; iPXE itself (user class "iPXE")
    then gets the script URL straight away.
    """
    url = f"http://{_safe(server, 'server')}:{int(http_port)}/boot/ipxe?mac=${{net0/mac}}"
    return (
        "# diskvault: proxy-DHCP + TFTP for iPXE chainloading\n"
        "port=0\n"
        f"dhcp-range={server},proxy\n"
        "enable-tftp\n"
        f"tftp-root={tftp_root}\n"
        "dhcp-userclass=set:ipxe,iPXE\n"
        'pxe-service=tag:!ipxe,x86PC,"Network boot (iPXE)",undionly.kpxe\n'
        'pxe-service=tag:!ipxe,X86-64_EFI,"Network boot (iPXE)",ipxe.efi\n'
        f"dhcp-boot=tag:ipxe,{url}\n"
        "log-dhcp\n"
    )
