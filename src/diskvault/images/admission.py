"""What an upload must pass besides its bytes: per-user limits and the client's checksum.

A user may hold ``UPLOADS_PER_USER`` uploads in progress (counted per ``serve``
process) and ``JOBS_PER_USER`` queued or running jobs; over either, 429 with
Retry-After. A checksum the client sends is compared before the image can
become READY (as Glance does with ``checksum`` and S3 with
``x-amz-checksum-sha256``).
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from diskvault.config import Settings
from diskvault.images.errors import (
    InvalidUpload,
    Reason,
    TooManyJobs,
    TooManyUploads,
    UnsafeImage,
)
from diskvault.jobs.models import Job, JobStatus

UPLOAD_RETRY_S = 10
JOBS_RETRY_S = 30
# The plain SHA-256 of the file (multipart), and its extents digest (sparse stream).
SHA256_HEADER = "x-checksum-sha256"
EXTENTS_HEADER = "x-checksum-sha256-extents"
SHA256_FIELD = "checksum_sha256"
EXTENTS_FIELD = "checksum_sha256_extents"
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")

_lock = threading.Lock()
_uploads: Counter[str] = Counter()


@contextmanager
def upload_slot(settings: Settings, user: str) -> Iterator[None]:
    """Hold one of ``user``'s upload slots for the duration of the block."""
    with _lock:
        if _uploads[user] >= settings.UPLOADS_PER_USER:
            raise TooManyUploads(
                user=user,
                count=_uploads[user],
                limit=settings.UPLOADS_PER_USER,
                setting="DISKVAULT_UPLOADS_PER_USER",
                retry_after=UPLOAD_RETRY_S,
            )
        _uploads[user] += 1
    try:
        yield
    finally:
        with _lock:
            _uploads[user] -= 1
            if not _uploads[user]:
                del _uploads[user]


def check_jobs(session: Session, settings: Settings, user: str) -> None:
    """Refuse a new job while ``user`` has ``JOBS_PER_USER`` queued or running."""
    count = session.scalar(
        select(func.count())
        .select_from(Job)
        .where(Job.owner == user, Job.status.in_([JobStatus.queued, JobStatus.running]))
    )
    if count is not None and count >= settings.JOBS_PER_USER:
        raise TooManyJobs(
            user=user,
            count=count,
            limit=settings.JOBS_PER_USER,
            setting="DISKVAULT_JOBS_PER_USER",
            retry_after=JOBS_RETRY_S,
        )


@dataclass
class Expected:
    """Checksums the client sent; each is lower-case hex or None."""

    sha256: str | None = None
    extents: str | None = None

    @classmethod
    def parse(cls, *sources: Mapping[str, str]) -> Expected:
        """From headers, query parameters or form fields (the first source that has one)."""
        found = cls()
        for key, header, attr in (
            (SHA256_FIELD, SHA256_HEADER, "sha256"),
            (EXTENTS_FIELD, EXTENTS_HEADER, "extents"),
        ):
            for source in sources:
                value = source.get(header) or source.get(key)
                if value:
                    if not _HEX64.match(value.strip()):
                        raise InvalidUpload(f"{key} must be 64 hexadecimal digits")
                    setattr(found, attr, value.strip().lower())
                    break
        return found

    def refuse_unverifiable(self, *, sparse: bool) -> None:
        """Each body kind can verify one checksum; asking for the other is a 400."""
        if sparse and self.sha256:
            raise InvalidUpload(
                "a sparse stream is verified with X-Checksum-Sha256-Extents (see docs/images.md):"
                " its plain SHA-256 would mean hashing every gap"
            )
        if not sparse and self.extents:
            raise InvalidUpload("a multipart upload is verified with X-Checksum-Sha256")

    @property
    def kind(self) -> str | None:
        """What was verified: ``"sha256"``, ``"sha256-extents-v1"`` or None."""
        return "sha256" if self.sha256 else "sha256-extents-v1" if self.extents else None

    def verify(self, sha256: str | None, extents: str | None) -> None:
        for name, want, got in (
            ("SHA-256", self.sha256, sha256),
            ("sha256-extents-v1 digest", self.extents, extents),
        ):
            if want and want != got:
                raise UnsafeImage(
                    Reason.CHECKSUM_MISMATCH,
                    f"the {name} of the bytes received is {got}, but the client sent {want}",
                )
