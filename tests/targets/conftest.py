"""A private tgtd (own control socket, free 127.0.0.1 port) and a known disk image."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from diskvault.targets.backends import TgtBackend
from diskvault.targets.errors import TargetNotFound
from diskvault.targets.iqn import make_iqn
from diskvault.tools.tgt import TgtdServer
from support.targets_tgtd import free_control_port, free_tcp_port

MiB = 1024 * 1024
INITIATOR = "iqn.2024-01.com.example:initiator-a"
OTHER_INITIATOR = "iqn.2024-01.com.example:initiator-b"


@pytest.fixture(scope="session")
def tgtd() -> Iterator[TgtdServer]:
    with TgtdServer(free_control_port(), portal=f"127.0.0.1:{free_tcp_port()}") as server:
        yield server


@pytest.fixture(scope="session")
def tgt_backend(tgtd: TgtdServer) -> TgtBackend:
    return TgtBackend(control_port=tgtd.control_port, timeout=10)


@pytest.fixture(scope="session")
def disk_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 MiB of seeded pseudo-random bytes, so any misplaced block shows."""
    path = tmp_path_factory.mktemp("targets") / "disk.raw"
    path.write_bytes(random.Random(3720).randbytes(8 * MiB))
    return path


@pytest.fixture
def iqn(request: pytest.FixtureRequest, tgt_backend: TgtBackend) -> Iterator[str]:
    """A per-test target name; whatever the test created under it is removed after."""
    target = make_iqn(request.node.name)
    yield target
    with contextlib.suppress(TargetNotFound):
        tgt_backend.delete_target(target, force=True)
