"""Tiny bootable disks for the diskless-boot tests, hand-assembled x86.

``marker_disk`` prints a marker on COM1 (port 0x3f8) and halts.
``writer_disk`` first writes its own boot sector to LBA 1 of the boot drive
(INT 13h AH=03h, drive in DL as the BIOS / iPXE passed it), then prints
``DVWRITE-OK`` (or ``DVWRITE-ERR`` if the write failed).

iPXE's int13 emulation fails on very small SAN disks (1 MiB was seen to fail),
so the disks are 16 MiB (sparse).
"""

from __future__ import annotations

from pathlib import Path

DISK_SIZE = 16 * 1024 * 1024
MARKER = b"DVBOOT-MARKER"
WRITE_OK = b"DVWRITE-OK"

# cli; xor ax,ax; mov ds,ax; mov si,0x7c16; mov dx,0x3f8;
# loop: lodsb; test al,al; jz done; out dx,al; jmp loop; done: hlt; jmp done
_PRINT = bytes.fromhex("FA31C08ED8BE167CBAF803AC84C07403EEEBF8F4EBFD")
# ...; mov es,ax; mov ax,0x0301; mov cx,2; mov dh,0; mov bx,0x7c00; int 13h;
# mov si,ok; jnc +3; mov si,err; then the same print loop
_WRITE = bytes.fromhex(
    "FA31C08ED88EC0B80103B90200B600BB007CCD13BE2A7C7303BE357CBAF803AC84C07403EEEBF8F4EBFD"
)


def _sector(code: bytes) -> bytes:
    assert len(code) <= 510
    return code + b"\0" * (510 - len(code)) + b"\x55\xaa"


def marker_sector(marker: bytes = MARKER) -> bytes:
    return _sector(_PRINT + marker + b"\0")


def writer_sector() -> bytes:
    code = _WRITE + WRITE_OK + b"\0" + b"DVWRITE-ERR\0"
    assert code.index(WRITE_OK) == 42  # the addresses baked into _WRITE
    return _sector(code)


def write_disk(path: Path, sector: bytes) -> Path:
    with open(path, "wb") as fh:
        fh.write(sector)
        fh.truncate(DISK_SIZE)
    return path
