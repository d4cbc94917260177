"""qemu-system-x86_64: the errors of the boot verifier's QEMU (boot/verify.py builds its
arguments and runs it as a managed Process)."""

from __future__ import annotations

from diskvault.tools.process import ToolError

DEFAULT_BINARY = "qemu-system-x86_64"


class QemuError(ToolError):
    tool_name = "qemu-system-x86_64"
