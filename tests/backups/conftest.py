from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from diskvault.config import Settings
from support.backups_env import add_repo, add_source, create_disk, make_settings


@pytest.fixture
def bsettings(tmp_path: Path) -> Settings:
    """SQLite settings for the engine tests (the API tests also cover PostgreSQL)."""
    return make_settings(tmp_path / "data")


@pytest.fixture
def repo(bsettings: Settings, tmp_path: Path) -> str:
    return add_repo(bsettings, "local", tmp_path / "repo")


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """A moto S3 server on loopback, with dummy credentials, and a bucket."""
    import boto3
    from moto.server import ThreadedMotoServer

    env = pytest.MonkeyPatch()
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    }.items():
        env.setenv(key, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
        Bucket="dv-offsite"
    )
    try:
        yield f"s3://dv-offsite/copies?endpoint_url={endpoint}&region=us-east-1"
    finally:
        server.stop()
        env.undo()


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 48 MiB ext4 filesystem on a loop device."""
    backing = tmp_path / "fs.img"
    backing.write_bytes(b"")
    subprocess.run(["truncate", "-s", "48M", str(backing)], check=True, timeout=10)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(backing)], check=True, timeout=30)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-o", "loop", str(backing), str(mnt)], check=True, timeout=30)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False, timeout=30)


@pytest.fixture
def disk(bsettings: Settings, tmp_path: Path) -> Path:
    """Source ``vm1``: one qcow2 disk."""
    path = create_disk(tmp_path / "vm1.qcow2")
    add_source(bsettings, "vm1", "qcow2", disks=[str(path)])
    return path
