from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from diskvault.storage import (
    LocalStorageProvider,
    MemoryStorageProvider,
    S3StorageProvider,
    StorageProvider,
)
from support.tmpfs import mounted_tmpfs

MiB = 1024 * 1024


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """One moto S3 server on loopback for the whole session, with dummy credentials."""
    env = pytest.MonkeyPatch()
    env.setenv("AWS_ACCESS_KEY_ID", "testing")
    env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    env.setenv("AWS_DEFAULT_REGION", "us-east-1")
    env.setenv("AWS_CONFIG_FILE", "/nonexistent")
    env.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    env.delenv("AWS_PROFILE", raising=False)
    env.delenv("AWS_SESSION_TOKEN", raising=False)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        env.undo()


@pytest.fixture
def bucket(moto_endpoint: str) -> str:
    name = f"dv-{uuid.uuid4().hex[:16]}"
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").create_bucket(
        Bucket=name
    )
    return name


@pytest.fixture
def s3(moto_endpoint: str, bucket: str) -> S3StorageProvider:
    return S3StorageProvider(bucket, "vault", endpoint_url=moto_endpoint, region="us-east-1")


@pytest.fixture
def local(tmp_path: Path) -> LocalStorageProvider:
    return LocalStorageProvider(tmp_path / "root", create=True)


@pytest.fixture(params=["local", "memory", "s3"])
def provider(request: pytest.FixtureRequest) -> StorageProvider:
    """Each provider in turn, for tests of the behaviour they all promise."""
    if request.param == "local":
        return request.getfixturevalue("local")
    if request.param == "memory":
        return MemoryStorageProvider()
    return request.getfixturevalue("s3")


@pytest.fixture(scope="session")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 MiB of random bytes: enough for a 4-part multipart upload at 16 MiB parts."""
    path = tmp_path_factory.mktemp("big") / "big.bin"
    with open(path, "wb") as fh:
        for _ in range(64):
            fh.write(os.urandom(MiB))
    return path


@pytest.fixture
def tmpfs(local: LocalStorageProvider) -> Iterator[Path]:
    """A 1 MiB tmpfs at ``mnt/`` in the local root: a second device, and one that fills up."""
    with mounted_tmpfs(local.root / "mnt", "1m") as mnt:
        yield mnt
