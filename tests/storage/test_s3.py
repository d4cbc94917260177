"""S3 provider against moto's server on 127.0.0.1: multipart, ranges, ETags, failures."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import boto3
import pytest

from diskvault.fsutil import PARTIAL_SUFFIX
from diskvault.storage import ObjectNotFound, S3StorageProvider

MiB = 1024 * 1024


def sha256_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def test_multipart_upload_download_and_hash(
    s3: S3StorageProvider, big_file: Path, tmp_path: Path
) -> None:
    seen: list[int] = []
    uploaded = s3.upload_file(big_file, "images/big.raw", progress=seen.append)
    assert uploaded.size == 64 * MiB
    assert sum(seen) == 64 * MiB
    # 64 MiB at 16 MiB parts: S3 reports a multipart ETag as "<md5 of md5s>-<parts>".
    assert uploaded.etag is not None and uploaded.etag.endswith("-4")
    with open(big_file, "rb") as fh:
        md5 = hashlib.file_digest(fh, "md5").hexdigest()
    assert s3.hash("images/big.raw", "md5") == md5  # streamed, since the ETag is not an MD5
    assert s3.hash("images/big.raw") == sha256_file(big_file)

    out = tmp_path / "stage" / "big.raw"
    s3.download_file("images/big.raw", out)
    assert sha256_file(out) == sha256_file(big_file)
    assert [p.name for p in out.parent.iterdir()] == ["big.raw"]

    with s3.open_read("images/big.raw", 40 * MiB - 5, 40 * MiB + 5) as stream:
        chunk = stream.read()
    with open(big_file, "rb") as fh:
        fh.seek(40 * MiB - 5)
        assert chunk == fh.read(10)


def test_streamed_write_goes_multipart(s3: S3StorageProvider) -> None:
    data = b"\xab" * (20 * MiB)
    written = s3.write("stream.img", io.BytesIO(data), size=len(data))
    assert written.etag is not None and written.etag.endswith("-2")
    assert s3.hash("stream.img", "md5") == hashlib.md5(data).hexdigest()


def test_failed_multipart_is_aborted(
    s3: S3StorageProvider, moto_endpoint: str, bucket: str
) -> None:
    class DropsAfter20MiB(io.RawIOBase):
        left = 20 * MiB

        def readable(self) -> bool:
            return True

        def readinto(self, b: memoryview) -> int:  # type: ignore[override]
            if self.left <= 0:
                raise ConnectionResetError("client went away")
            n = min(len(b), self.left)
            b[:n] = bytes(n)
            self.left -= n
            return n

    with pytest.raises(ConnectionResetError):
        s3.write("dropped.img", DropsAfter20MiB())
    assert not s3.exists("dropped.img")
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_single_part_md5_comes_from_etag(s3: S3StorageProvider) -> None:
    data = b"small object"
    written = s3.write("small", io.BytesIO(data))
    assert written.etag == hashlib.md5(data).hexdigest()
    assert s3.hash("small", "md5") == written.etag


def test_keys_live_under_the_prefix(s3: S3StorageProvider, moto_endpoint: str, bucket: str) -> None:
    s3.write("a/b.img", io.BytesIO(b"x"))
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    listed = client.list_objects_v2(Bucket=bucket)
    assert [o["Key"] for o in listed["Contents"]] == ["vault/a/b.img"]
    assert s3.stat("a/b.img").url == f"s3://{bucket}/vault/a/b.img"
    # Folder markers made by consoles are not files.
    client.put_object(Bucket=bucket, Key="vault/folder/", Body=b"")
    assert [f.key for page in s3.scan() for f in page] == ["a/b.img"]


def test_pagination_over_many_keys(s3: S3StorageProvider) -> None:
    for i in range(120):
        s3.write(f"many/{i:04d}", io.BytesIO(b"."))
    pages = list(s3.scan("many/", page_size=50))
    assert [len(p) for p in pages] == [50, 50, 20]
    assert [f.key for p in pages for f in p] == [f"many/{i:04d}" for i in range(120)]


def test_failed_download_leaves_no_partial(s3: S3StorageProvider, tmp_path: Path) -> None:
    out = tmp_path / "dl" / "x.img"
    out.parent.mkdir()
    out.write_bytes(b"previous")
    with pytest.raises(ObjectNotFound):
        s3.download_file("absent.img", out)
    assert out.read_bytes() == b"previous"
    assert not [p for p in out.parent.iterdir() if p.name.endswith(PARTIAL_SUFFIX)]


def test_missing_bucket_is_reported(moto_endpoint: str) -> None:
    provider = S3StorageProvider("no-such-bucket", endpoint_url=moto_endpoint, region="us-east-1")
    with pytest.raises(ObjectNotFound, match="no-such-bucket"):
        provider.list()


def test_repr_and_errors_never_show_credentials(moto_endpoint: str, bucket: str) -> None:
    provider = S3StorageProvider(
        bucket,
        "p",
        endpoint_url=moto_endpoint,
        region="us-east-1",
        access_key="AKIDSECRETVALUE",
        secret_key="s3cr3t-s3cr3t",
    )
    shown = repr(provider) + str(provider) + str(vars(provider))
    assert "s3cr3t" not in shown
    assert "AKIDSECRETVALUE" not in shown
    with pytest.raises(ObjectNotFound) as info:
        provider.stat("missing")
    assert "s3cr3t" not in str(info.value)
