"""X-Forwarded-For is believed only from DISKVAULT_TRUSTED_PROXIES (finding 9).

uvicorn trusts it from 127.0.0.1 by default, so rotating the header dodged the
per-client boot limit. Both cases run against a real ``diskvault serve``.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from support.boot_env import new_mac
from support.http import assert_problem
from support.server import ServerProcess

LIMITS = {"DISKVAULT_BOOT_RATE_LIMIT_PER_MIN": "3", "DISKVAULT_WORKERS": "0"}


def _boot(url: str, forwarded_for: str) -> httpx.Response:
    return httpx.get(
        url + "/boot/ipxe",
        params={"mac": new_mac()},  # a new machine each time: only the client limit applies
        headers={"X-Forwarded-For": forwarded_for},
        timeout=30,
    )


def test_forwarded_for_is_ignored_by_default(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "srv", env=LIMITS) as srv:
        answers = [_boot(srv.url, f"10.0.0.{i}") for i in range(1, 5)]
    assert [r.status_code for r in answers[:3]] == [200, 200, 200]
    body = assert_problem(answers[3], 429)
    assert "from 127.0.0.1" in body["detail"]
    assert body["setting"] == "DISKVAULT_BOOT_RATE_LIMIT_PER_MIN"


def test_forwarded_for_counts_from_a_trusted_proxy(tmp_path: Path) -> None:
    env = {**LIMITS, "DISKVAULT_TRUSTED_PROXIES": '["127.0.0.1"]'}
    with ServerProcess(tmp_path / "srv", env=env) as srv:
        first = [_boot(srv.url, "10.0.0.1") for _ in range(4)]
        other = _boot(srv.url, "10.0.0.2")
    assert [r.status_code for r in first[:3]] == [200, 200, 200]
    assert "from 10.0.0.1" in assert_problem(first[3], 429)["detail"]
    assert other.status_code == 200
