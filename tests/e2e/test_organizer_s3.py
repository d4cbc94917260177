"""The organizer on an S3 bucket (moto on 127.0.0.1): scan, duplicates, apply, rollback."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import boto3
import httpx
import pytest

from support.http import assert_problem
from support.organizer_s3 import moto_s3
from support.organizer_trees import (
    build_messy_tree,
    items,
    qemu_img,
    run_op,
    wait_op,
)
from support.server import ServerProcess

BUCKET = "messy-share"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_s3() as url:
        yield url


@pytest.fixture(scope="module")
def location(endpoint: str) -> str:
    return f"s3://{BUCKET}/share?endpoint_url={endpoint}&region=us-east-1"


@pytest.fixture(scope="module")
def bucket(endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The messy tree, a VHDX and duplicates uploaded under share/; key -> category."""
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    local = tmp_path_factory.mktemp("s3-tree")
    expected = build_messy_tree(local)
    qemu_img("create", "-q", "-f", "vhdx", str(local / "hyperv.vhdx"), "256M")
    expected["hyperv.vhdx"] = "disk-image"
    payload = os.urandom(100_000)
    for name in ("dup/a.bin", "dup/b.bin", "dup/c.bin"):
        (local / name).parent.mkdir(parents=True, exist_ok=True)
        (local / name).write_bytes(payload)
        expected[name] = "other"
    for key in expected:
        s3.upload_file(str(local / key), BUCKET, f"share/{key}")
    s3.put_object(Bucket=BUCKET, Key="private/secret.txt", Body=b"not for the organizer")
    return expected


@pytest.fixture(scope="module")
def client(
    tmp_path_factory: pytest.TempPathFactory, endpoint: str, location: str
) -> Iterator[httpx.Client]:
    env = {
        "DISKVAULT_ORGANIZER_ROOTS": json.dumps([location]),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    }
    server = ServerProcess(tmp_path_factory.mktemp("s3-server"), env=env)
    server.start()
    try:
        with server.client(server.login()) as c:
            yield c
    finally:
        server.stop()


def test_scan_categorizes_objects_by_content(
    client: httpx.Client, location: str, bucket: dict[str, str]
) -> None:
    op = run_op(client, type="scan", location=location)
    found = {i["key"]: i for i in items(client, op["id"])}
    assert {k: v["category"] for k, v in found.items()} == bucket
    assert found["hyperv.vhdx"]["format"] == "vhdx"
    assert found["hyperv.vhdx"]["virtual_size"] == 256 * 1024 * 1024
    assert found["vms/web.qcow2"]["format"] == "qcow2"
    assert found["isos/install.iso"]["format"] == "iso"


def test_duplicates_grouped_by_size_and_etag(
    client: httpx.Client, location: str, bucket: dict[str, str]
) -> None:
    op = run_op(client, type="dupes", location=location)
    groups = {tuple(g["keys"]) for g in op["summary"]["items"]}
    assert ("dup/a.bin", "dup/b.bin", "dup/c.bin") in groups
    assert ("copies/notes-copy.txt", "notes.txt") in groups
    assert op["summary"]["wasted_bytes"] == 2 * 100_000 + len(b"remember the milk\n" * 10)


def test_apply_and_rollback_on_s3(
    client: httpx.Client, location: str, endpoint: str, bucket: dict[str, str]
) -> None:
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")

    def keys() -> set[str]:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="share/")
        return {o["Key"] for p in pages for o in p.get("Contents", [])}

    before = keys()
    rules = [{"match": {"category": "archive"}, "action": "move", "destination": "{format}/{name}"}]
    op = run_op(client, type="apply", location=location, rules=rules)
    assert op["summary"]["done"] == 4
    assert "share/gzip/backup.tar.gz" in keys() and "share/backup.tar.gz" not in keys()
    undo = client.post(f"/api/v1/operations/{op['id']}/rollback")
    result = wait_op(client, undo.json()["id"])
    assert result["summary"]["restored"] == 4
    assert keys() == before


def test_outside_the_bucket_prefix_is_refused(client: httpx.Client, endpoint: str) -> None:
    other = f"s3://{BUCKET}/private?endpoint_url={endpoint}&region=us-east-1"
    resp = client.post("/api/v1/operations", json={"type": "scan", "location": other})
    assert_problem(resp, 403)
