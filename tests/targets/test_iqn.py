"""iSCSI name (RFC 3720) and portal validation."""

from __future__ import annotations

import pytest

from diskvault.targets.errors import InvalidIqn, InvalidPortal
from diskvault.targets.iqn import (
    format_portal,
    is_local_address,
    make_iqn,
    parse_portal,
    validate_iqn,
    validate_portal,
)


@pytest.mark.parametrize(
    "name",
    [
        "iqn.2024-01.com.example:disk1",
        "iqn.2001-04.com.example",
        "iqn.2001-04.com.example:storage:diskarrays-sn-a8675309",
        "iqn.1991-05.com.microsoft:host-1.lab.example.com",
        "eui.02004567A425678D",
        "naa.52004567ba64678d",
        "naa.52004567ba64678d52004567ba64678d",
        "iqn.2024-01.com.example:" + "a" * (223 - len("iqn.2024-01.com.example:")),
    ],
)
def test_valid_names(name: str) -> None:
    assert validate_iqn(name) == name


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "empty"),
        ("iqn.2024-01.com.Example:disk", "lowercase"),
        ("iqn.24-01.com.example:disk", "expected iqn"),
        ("iqn.2024-13.com.example:disk", "month 13"),
        ("iqn.2024-01.:disk", "expected iqn"),
        ("iqn.2024-01.com.example:", "suffix"),
        ("iqn.2024-01.com.example:disk one", "suffix"),
        ("iqn.2024-01.com.example:disk_one", "suffix"),
        ("iqn.2024-01.-com.example:disk", "expected iqn"),
        ("iqn.2024-01.com.example:" + "a" * 200, "223 bytes"),
        ("eui.0200456", "16 hex"),
        ("naa.xyz", "hex"),
        ("disk1", "must start with"),
        ("IQN.2024-01.com.example:disk", "must start with"),
    ],
)
def test_invalid_names(name: str, why: str) -> None:
    with pytest.raises(InvalidIqn, match=why) as info:
        validate_iqn(name)
    assert info.value.status == 422
    assert info.value.problem()["name"] == name


def test_make_iqn_normalizes() -> None:
    assert make_iqn("Lab PC #3") == "iqn.2024-01.com.example:lab-pc-3"
    assert make_iqn("web_01", date="2019-07", domain="org.diskvault") == (
        "iqn.2019-07.org.diskvault:web-01"
    )
    with pytest.raises(InvalidIqn):
        make_iqn("###")
    with pytest.raises(InvalidIqn, match="223"):
        make_iqn("x" * 300)
    with pytest.raises(InvalidIqn):
        make_iqn("disk", domain="Example.COM")


def test_parse_and_format_portal() -> None:
    assert parse_portal("127.0.0.1:3260") == ("127.0.0.1", 3260)
    assert parse_portal("[::1]:3261") == ("::1", 3261)
    assert format_portal("::1", 3261) == "[::1]:3261"
    assert format_portal("127.0.0.1", 3260) == "127.0.0.1:3260"
    for bad in ("127.0.0.1", "localhost:3260", "127.0.0.1:0", "127.0.0.1:65536", ":3260"):
        with pytest.raises(InvalidPortal):
            parse_portal(bad)


def test_portal_must_be_local() -> None:
    assert validate_portal("127.0.0.1:3260") == ("127.0.0.1", 3260)
    assert validate_portal("0.0.0.0:3260") == ("0.0.0.0", 3260)
    assert is_local_address("::")
    # TEST-NET-1 (RFC 5737) is never assigned to a host; the check only binds, sends nothing.
    with pytest.raises(InvalidPortal, match="not an address of this host") as info:
        validate_portal("192.0.2.1:3260")
    assert info.value.status == 422
