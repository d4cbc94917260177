"""Objects in an S3 bucket (AWS, Cloudflare R2, MinIO, ... through ``endpoint_url``).

Big transfers go through s3transfer: multipart with several parts in flight for
uploads, parallel ranged GETs for downloads, and multipart copy for objects over
5 GiB. A move is a copy then a delete, as S3 has no rename. An upload is atomic by
S3's own rules: the key appears only when the single PUT or the
CompleteMultipartUpload succeeds, and a failed multipart is aborted.
Credentials go to the boto3 client only; the provider keeps no copy to leak.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, BinaryIO, NoReturn, cast

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from s3transfer.exceptions import RetriesExceededError as TransferRetriesExceeded

from diskvault.fsutil import atomic_file
from diskvault.storage.base import (
    BaseProvider,
    Page,
    ProgressCallback,
    StorageFile,
    StreamReader,
    UploadSource,
    check_range,
    normalize_key,
    normalize_prefix,
    os_errors,
    source_errors,
)
from diskvault.storage.errors import (
    ObjectNotFound,
    StorageAccessDenied,
    StorageError,
    StorageUnavailable,
)

MiB = 1024 * 1024
NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound"}
DENIED_CODES = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}
UNREACHABLE = (
    EndpointConnectionError,
    ConnectTimeoutError,
    ReadTimeoutError,
    ConnectionClosedError,
)
# With these, the ETag is not the MD5 of the content even for a single-part object.
KMS_ENCRYPTION = {"aws:kms", "aws:kms:dsse"}


class S3StorageProvider(BaseProvider):
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        *,
        session_token: str | None = None,
        multipart_threshold: int = 16 * MiB,
        multipart_chunksize: int = 16 * MiB,
        max_concurrency: int = 4,
    ) -> None:
        self.bucket = bucket
        self.prefix = normalize_prefix(prefix.strip("/") + "/") if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url
        self.region = region
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        options: dict[str, Any] = {
            "retries": {"max_attempts": 5, "mode": "standard"},
            "max_pool_connections": max(10, 2 * max_concurrency),
        }
        if endpoint_url:
            # S3-compatible servers (MinIO, R2) reliably support path-style addressing,
            # and not all of them accept the checksums newer botocore adds by default.
            options["s3"] = {"addressing_style": "path"}
            options["request_checksum_calculation"] = "when_required"
            options["response_checksum_validation"] = "when_required"
        self._client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            aws_session_token=session_token,
            config=Config(**options),
        )
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=multipart_chunksize,
            max_concurrency=max_concurrency,
            use_threads=True,
        )

    def _full(self, key: str) -> str:
        return self.prefix + normalize_key(key)

    def _file(self, full_key: str, size: int, mtime: float, etag: str | None) -> StorageFile:
        return StorageFile(
            key=full_key[len(self.prefix) :],
            size=size,
            mtime=mtime,
            etag=etag.strip('"') if etag else None,
            url=f"s3://{self.bucket}/{full_key}",
        )

    @contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        try:
            yield
        except (ClientError, BotoCoreError, Boto3Error, TransferRetriesExceeded) as exc:
            self._raise(exc, key)

    def _raise(self, exc: BaseException, key: str) -> NoReturn:
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code in NOT_FOUND_CODES:
                raise ObjectNotFound(key=key, storage=self.url) from exc
            if code == "NoSuchBucket":
                raise ObjectNotFound(key=f"bucket {self.bucket}", storage="S3") from exc
            if code in DENIED_CODES:
                raise StorageAccessDenied(key=key, storage=self.url, detail=code) from exc
            message = error.get("Message") or code
            raise StorageError(detail=f"{key} in {self.url}: S3 said {code}: {message}") from exc
        if isinstance(exc, UNREACHABLE):
            raise StorageUnavailable(storage=self.url, detail=type(exc).__name__) from exc
        if isinstance(exc, NoCredentialsError):
            raise StorageAccessDenied(
                key=key,
                storage=self.url,
                detail="no credentials: set DISKVAULT_S3_ACCESS_KEY_ID and "
                "DISKVAULT_S3_SECRET_ACCESS_KEY",
            ) from exc
        # boto3's upload_file wraps the ClientError that says what actually went wrong.
        cause = exc.__cause__ or exc.__context__
        if isinstance(exc, Boto3Error) and isinstance(cause, ClientError | BotoCoreError):
            self._raise(cause, key)
        raise StorageError(detail=f"{key} in {self.url}: {exc}") from exc

    # Listing and metadata -----------------------------------------------------------

    def list(
        self,
        prefix: str = "",
        cursor: str | None = None,
        limit: int = 1000,
        *,
        recursive: bool = True,
    ) -> tuple[Page, str | None]:
        """One ``ListObjectsV2`` call; the cursor is S3's continuation token."""
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": self.prefix + normalize_prefix(prefix),
            "MaxKeys": limit,
        }
        if cursor:
            kwargs["ContinuationToken"] = cursor
        if not recursive:
            kwargs["Delimiter"] = "/"
        with self._errors(prefix):
            resp = self._client.list_objects_v2(**kwargs)
        page = [
            self._file(obj["Key"], obj["Size"], obj["LastModified"].timestamp(), obj.get("ETag"))
            for obj in resp.get("Contents", [])
            if not obj["Key"].endswith("/")  # folder markers made by consoles
        ]
        page += [
            StorageFile(
                key=p["Prefix"][len(self.prefix) :].rstrip("/"), size=0, mtime=0.0, is_dir=True
            )
            for p in resp.get("CommonPrefixes", [])
        ]
        page.sort(key=lambda f: f.key)
        return page, resp.get("NextContinuationToken") if resp.get("IsTruncated") else None

    def _head(self, key: str) -> dict[str, Any]:
        with self._errors(normalize_key(key)):
            return cast(
                dict[str, Any], self._client.head_object(Bucket=self.bucket, Key=self._full(key))
            )

    def stat(self, key: str) -> StorageFile:
        head = self._head(key)
        return self._file(
            self._full(key),
            head["ContentLength"],
            head["LastModified"].timestamp(),
            head.get("ETag"),
        )

    def hash(self, key: str, algo: str = "sha256") -> str:
        if algo == "md5":
            head = self._head(key)
            etag = str(head.get("ETag", "")).strip('"')
            encrypted = (
                head.get("ServerSideEncryption") in KMS_ENCRYPTION or "SSECustomerAlgorithm" in head
            )
            # A multipart ETag is "<md5 of part md5s>-<parts>", not the content's MD5.
            if etag and "-" not in etag and not encrypted:
                return etag
        return super().hash(key, algo)

    # Bytes -------------------------------------------------------------------------

    def open_read(self, key: str, start: int = 0, end: int | None = None) -> BinaryIO:
        check_range(start, end)
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self._full(key)}
        if end == start:
            self.stat(key)  # still report a missing key
            return io.BytesIO()
        if start or end is not None:
            kwargs["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            resp = self._client.get_object(**kwargs)
        except ClientError as exc:
            # The object exists but is shorter than start: an empty read, as from a file.
            if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                return io.BytesIO()
            self._raise(exc, normalize_key(key))
        except (BotoCoreError, Boto3Error) as exc:
            self._raise(exc, normalize_key(key))
        return io.BufferedReader(StreamReader(cast(IO[bytes], resp["Body"])))

    def write(
        self,
        key: str,
        src: IO[bytes],
        *,
        size: int | None = None,
        progress: ProgressCallback | None = None,
        overwrite: bool = True,
    ) -> StorageFile:
        """Upload ``src``; without ``overwrite`` an existing key is refused (checked first)."""
        norm = normalize_key(key)
        self._check_destination(norm, overwrite)
        reader = io.BufferedReader(UploadSource(src, expect=size, key=norm))
        with source_errors(), self._errors(norm):
            self._client.upload_fileobj(
                reader, self.bucket, self._full(norm), Config=self._transfer, Callback=progress
            )
        return self.stat(norm)

    def upload_file(
        self, local_path: Path, key: str, progress: ProgressCallback | None = None
    ) -> StorageFile:
        # s3transfer reads parts of a real file in parallel, which a stream cannot offer.
        norm = normalize_key(key)
        with self._errors(norm), os_errors(str(local_path), "the local filesystem"):
            self._client.upload_file(
                str(local_path),
                self.bucket,
                self._full(norm),
                Config=self._transfer,
                Callback=progress,
            )
        return self.stat(norm)

    def download_file(
        self, key: str, local_path: Path, progress: ProgressCallback | None = None
    ) -> Path:
        norm = normalize_key(key)
        with (
            self._errors(norm),
            os_errors(str(local_path), "the local filesystem"),
            atomic_file(local_path) as fh,
        ):
            self._client.download_fileobj(
                self.bucket, self._full(norm), fh, Config=self._transfer, Callback=progress
            )
        return local_path

    def copy(self, src: str, dst: str, *, overwrite: bool = False) -> StorageFile:
        src_norm, dst_norm = normalize_key(src), normalize_key(dst)
        self._check_destination(dst_norm, overwrite)
        if src_norm == dst_norm:
            return self.stat(dst_norm)  # S3 refuses to copy an object onto itself unchanged
        with self._errors(src_norm):
            self._client.copy(
                {"Bucket": self.bucket, "Key": self._full(src_norm)},
                self.bucket,
                self._full(dst_norm),
                Config=self._transfer,
            )
        return self.stat(dst_norm)

    def delete(self, key: str, *, missing_ok: bool = False) -> None:
        norm = normalize_key(key)
        if not missing_ok:
            self.stat(norm)  # DeleteObject succeeds on a missing key; say so instead
        with self._errors(norm):
            self._client.delete_object(Bucket=self.bucket, Key=self._full(norm))
