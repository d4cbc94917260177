"""Boot request helpers without a server: MACs, the advertised address, the rate limit."""

from __future__ import annotations

import pytest

from diskvault.boot.bootscript import RateLimiter, advertise_address, split_host
from diskvault.boot.errors import InvalidMac
from diskvault.boot.service import normalize_mac
from diskvault.config import Settings


@pytest.mark.parametrize(
    "text", ["52:54:00:12:34:56", "52-54-00-12-34-56", "525400123456", " 52:54:00:12:34:56 "]
)
def test_mac_spellings_normalize(text: str) -> None:
    assert normalize_mac(text.upper()) == "52:54:00:12:34:56"


@pytest.mark.parametrize(
    "text",
    ["", "52:54:00:12:34", "52:54:00:12:34:56:78", "52:54:00-12:34:56", "g2:54:00:12:34:56",
     "01:00:5e:00:00:01", "00:00:00:00:00:00", "52:54:00:12:34:56;chain x"],
)  # fmt: skip
def test_bad_macs_are_refused_with_422(text: str) -> None:
    with pytest.raises(InvalidMac) as err:
        normalize_mac(text)
    assert err.value.status == 422


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("10.0.2.2:8080", ("10.0.2.2", 8080)),
        ("boot.lab.example", ("boot.lab.example", None)),
        ("[fd00::1]:8080", ("[fd00::1]", 8080)),
        ("evil host\nsanboot", ("", None)),
        ("", ("", None)),
    ],
)
def test_host_header_is_split_and_checked(header: str, expected: tuple[str, int | None]) -> None:
    assert split_host(header) == expected


def test_advertised_address_prefers_the_setting_then_the_host_header() -> None:
    settings = Settings(ISCSI_PORTAL="0.0.0.0:3260")
    assert advertise_address(settings, "10.0.2.2:8080") == "10.0.2.2"
    assert advertise_address(settings, "bad host!") == "127.0.0.1"
    assert advertise_address(Settings(ISCSI_PORTAL="192.0.2.7:3260"), "") == "192.0.2.7"
    fixed = Settings(BOOT_ADVERTISE_ADDRESS="192.0.2.10")
    assert advertise_address(fixed, "10.0.2.2:8080") == "192.0.2.10"


def test_rate_limit_is_a_token_bucket_per_client() -> None:
    now = [0.0]
    limiter = RateLimiter(60, clock=lambda: now[0])  # one per second, bursts of 60
    assert all(limiter.take("a") == 0 for _ in range(60))
    assert limiter.take("a") == pytest.approx(1.0)
    assert limiter.take("b") == 0  # other clients have their own bucket
    now[0] += 2.5
    assert limiter.take("a") == 0 and limiter.take("a") == 0
    assert limiter.take("a") > 0
