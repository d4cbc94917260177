from __future__ import annotations

from pathlib import Path

import pytest

from diskvault.config import load_settings
from diskvault.organizer.errors import BadLocation, LocationNotAllowed
from diskvault.organizer.locations import canonical, check_location, is_reserved


def _settings(tmp_path: Path, *roots: str):  # type: ignore[no-untyped-def]
    return load_settings(DATA_DIR=tmp_path / "data", ORGANIZER_ROOTS=list(roots))


def test_canonical_forms() -> None:
    assert canonical("/srv/share/") == "file:///srv/share"
    assert canonical("file:///srv//share/./x") == "file:///srv/share/x"
    assert canonical("s3://b/p/?region=r&endpoint_url=http://h") == (
        "s3://b/p?endpoint_url=http%3A%2F%2Fh&region=r"
    )


@pytest.mark.parametrize("bad", ["", "file:///srv/../etc", "s3://b/p/../q", "ftp://x/y", "s3:///p"])
def test_malformed_or_traversing_locations_are_bad_requests(bad: str) -> None:
    with pytest.raises(BadLocation) as err:
        canonical(bad)
    assert err.value.status == 400


def test_only_locations_inside_roots_are_allowed(tmp_path: Path) -> None:
    share = tmp_path / "share"
    (share / "sub").mkdir(parents=True)
    (share / "out").symlink_to(tmp_path)
    settings = _settings(tmp_path, share.as_uri(), "s3://bucket/pre?region=r")
    assert check_location(settings, str(share / "sub")) == (share / "sub").as_uri()
    assert check_location(settings, "s3://bucket/pre/x?region=r").startswith("s3://bucket/pre/x")
    for outside in (
        tmp_path.as_uri(),
        (share / "out").as_uri(),  # a symlink out of the root
        "s3://bucket/prefix-not?region=r",
        "s3://bucket/pre/x",  # another endpoint/region is another store
        "s3://other/pre?region=r",
    ):
        with pytest.raises(LocationNotAllowed) as err:
            check_location(settings, outside)
        assert err.value.status == 403


def test_no_roots_means_nothing_is_allowed(tmp_path: Path) -> None:
    with pytest.raises(LocationNotAllowed, match="none configured"):
        check_location(_settings(tmp_path), str(tmp_path))


def test_reserved_folders() -> None:
    assert is_reserved(".diskvault-trash/x/y") and is_reserved(".diskvault-quarantine/a")
    assert not is_reserved("a/.diskvault-trash/y")
