"""What a source says about booting its restore points (read by boot verification).

``boot_check``: a regular expression the guest's serial console must print
(default: a login prompt, systemd's "Reached target", a Windows boot manager);
``boot_timeout_s``: how long it may take. Kept in the source's config for
every source kind.
"""

from __future__ import annotations

import re
from typing import Any

from diskvault.backups.errors import InvalidSource

MAX_PATTERN = 500
MAX_TIMEOUT_S = 3600.0


def boot_config(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """The boot keys of a new source's body, checked; absent keys are left out."""
    out: dict[str, Any] = {}
    check = body.get("boot_check")
    if check is not None:
        if not isinstance(check, str) or not check or len(check) > MAX_PATTERN:
            raise InvalidSource(kind=kind, detail=f"boot_check: 1-{MAX_PATTERN} characters")
        try:
            re.compile(check)
        except re.error as exc:
            raise InvalidSource(kind=kind, detail=f"boot_check is not a regex: {exc}") from None
        out["boot_check"] = check
    timeout = body.get("boot_timeout_s")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise InvalidSource(kind=kind, detail="boot_timeout_s must be a number of seconds")
        if not 0 < timeout <= MAX_TIMEOUT_S:
            raise InvalidSource(kind=kind, detail=f"boot_timeout_s: 1-{MAX_TIMEOUT_S:.0f} s")
        out["boot_timeout_s"] = float(timeout)
    return out
