from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import pytest

from diskvault.storage import (
    PROVIDERS,
    InvalidStorageUrl,
    LocalStorageProvider,
    MemoryStorageProvider,
    S3StorageProvider,
    StorageProvider,
    provider_from_url,
    redact_url,
)


def test_registry_names_every_provider() -> None:
    assert PROVIDERS["file"] is LocalStorageProvider
    assert PROVIDERS["s3"] is S3StorageProvider
    assert PROVIDERS["memory"] is MemoryStorageProvider


def test_file_url(tmp_path: Path) -> None:
    provider = provider_from_url(tmp_path.as_uri())
    assert isinstance(provider, LocalStorageProvider)
    assert isinstance(provider, StorageProvider)
    assert provider.root == tmp_path.resolve()
    provider.write("x", io.BytesIO(b"1"))
    assert (tmp_path / "x").read_bytes() == b"1"
    same = provider_from_url(f"file://localhost{tmp_path}")
    assert isinstance(same, LocalStorageProvider) and same.root == provider.root


@pytest.mark.parametrize(
    "url",
    ["file://server/share", "file:relative/path", "file:///tmp?x=1", "ftp://host/x", "s3:///pfx"],
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidStorageUrl) as info:
        provider_from_url(url)
    assert info.value.status == 400


def test_s3_url_with_endpoint_and_region(
    moto_endpoint: str, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISKVAULT_S3_ACCESS_KEY_ID", "from-env")
    monkeypatch.setenv("DISKVAULT_S3_SECRET_ACCESS_KEY", "env-secret")
    provider = provider_from_url(
        f"s3://{bucket}/some/prefix?endpoint_url={moto_endpoint}&region=us-east-1"
    )
    assert isinstance(provider, S3StorageProvider)
    assert (provider.bucket, provider.prefix) == (bucket, "some/prefix/")
    assert (provider.endpoint_url, provider.region) == (moto_endpoint, "us-east-1")
    assert provider.url == f"s3://{bucket}/some/prefix"
    provider.write("k", io.BytesIO(b"through moto"))
    assert provider.open_read("k").read() == b"through moto"
    credentials = provider._client._request_signer._credentials  # what boto3 will sign with
    assert credentials.access_key == "from-env"
    assert "env-secret" not in repr(provider)


def test_s3_credentials_from_settings(moto_endpoint: str, bucket: str) -> None:
    settings = SimpleNamespace(S3_ACCESS_KEY_ID="from-settings", S3_SECRET_ACCESS_KEY="x")
    provider = provider_from_url(f"s3://{bucket}?endpoint_url={moto_endpoint}", settings=settings)
    assert isinstance(provider, S3StorageProvider)
    assert provider.prefix == ""
    assert provider._client._request_signer._credentials.access_key == "from-settings"


@pytest.mark.parametrize(
    "url",
    [
        "s3://AKID:hunter2@bucket/prefix",
        "s3://bucket/prefix?secret_key=hunter2",
        "s3://bucket/prefix?endpoint_url=http://127.0.0.1:9000&aws_secret_access_key=hunter2",
    ],
)
def test_credentials_in_urls_are_refused_without_echoing_them(url: str) -> None:
    with pytest.raises(InvalidStorageUrl, match="DISKVAULT_S3_ACCESS_KEY_ID") as info:
        provider_from_url(url)
    assert "hunter2" not in str(info.value)
    assert "hunter2" not in str(info.value.problem())


def test_unknown_s3_parameter_is_refused() -> None:
    with pytest.raises(InvalidStorageUrl, match="endpont_url"):
        provider_from_url("s3://bucket?endpont_url=http://127.0.0.1:9000")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("s3://user:pw@bucket/p?region=eu&secret_key=s", "s3://bucket/p?region=eu"),
        ("https://u:p@host:8443/x?X-Amz-Signature=abc&a=1", "https://host:8443/x?a=1"),
        ("file:///srv/images", "file:///srv/images"),
        (
            "s3://bucket/p?endpoint_url=http%3A%2F%2Fminio%3A9000",
            "s3://bucket/p?endpoint_url=http%3A%2F%2Fminio%3A9000",
        ),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_memory_urls_share_a_store_by_name() -> None:
    first = provider_from_url("memory://factory-test")
    second = provider_from_url("memory://factory-test")
    try:
        first.write("k", io.BytesIO(b"shared"))
        assert second.open_read("k").read() == b"shared"
        assert not provider_from_url("memory://").exists("k")
    finally:
        MemoryStorageProvider.forget("factory-test")
    assert not provider_from_url("memory://factory-test").exists("k")
