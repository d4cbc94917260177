"""qemu-io: raw I/O commands on an image, for tests and benchmarks."""

from __future__ import annotations

import os
from collections.abc import Sequence

from diskvault.tools import process
from diskvault.tools.process import DEFAULT_TIMEOUT, ToolError

DEFAULT_BINARY = "qemu-io"


class QemuIoError(ToolError):
    tool_name = "qemu-io"


def run(
    path: str | os.PathLike[str],
    fmt: str,
    commands: Sequence[str],
    *,
    binary: str = DEFAULT_BINARY,
    timeout: float = DEFAULT_TIMEOUT,
) -> str:
    """Run each of ``commands`` (``qemu-io -c``) on the image; return qemu-io's output.

    qemu-io exits non-zero when a command fails, e.g. a ``read -P`` whose data
    does not match the pattern, which raises :class:`QemuIoError`.
    """
    cmd = [binary, "-f", fmt]
    for command in commands:
        cmd += ["-c", command]
    cmd.append(os.fspath(path))
    return process.run(cmd, timeout=timeout, error=QemuIoError).stdout


def write_pattern(
    path: str | os.PathLike[str],
    fmt: str,
    offset: int,
    length: int,
    pattern_byte: int,
    *,
    binary: str = DEFAULT_BINARY,
    timeout: float = DEFAULT_TIMEOUT,
) -> None:
    """Fill ``length`` bytes at ``offset`` with ``pattern_byte``."""
    if not 0 <= pattern_byte <= 0xFF:
        raise ValueError(f"pattern byte {pattern_byte} is not 0..255")
    command = f"write -P {pattern_byte:#x} {offset} {length}"
    run(path, fmt, [command], binary=binary, timeout=timeout)
