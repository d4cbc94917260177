"""In-process apps with a private managed tgtd, and golden images with boot sectors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.boot_env import BootApp, MakeMachine, boot_app, insert_golden, machine_factory
from support.boot_sectors import marker_sector


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BootApp]:
    """One app per module on SQLite (the endpoint tests also cover PostgreSQL)."""
    with boot_app(tmp_path_factory.mktemp("boot")) as app:
        yield app


@pytest.fixture(scope="module")
def golden(lab: BootApp) -> tuple[str, Path]:
    return insert_golden(lab.settings, marker_sector())


@pytest.fixture(scope="module")
def make_machine(lab: BootApp) -> MakeMachine:
    return machine_factory(lab)
