"""Repository keys for encryption at rest: key files, fingerprints, paper keys, and
how QEMU gets a key.

A key file holds the LUKS passphrase of every restore point written under it: 64
hex digits (256 random bits) made by :func:`create`, or any printable text of at
least 32 characters. QEMU reads it as it is (``--object secret,file=KEY``), so
the file itself restores a point with plain ``qemu-img``. Because the passphrase
is already a full-strength random key, the LUKS key stretching (PBKDF2) is set to
10 ms: at QEMU's default of 2 s every open of every layer of a chain costs 2 s.

The database and the sidecars hold only the key's fingerprint. Below: how a
repository gets its key, changes encryption (only while empty) and is rekeyed.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from diskvault.backups.errors import (
    EncryptionLocked,
    InvalidKeyFile,
    InvalidRepository,
    KeyUnavailable,
    NotSupportedHere,
)
from diskvault.backups.models import Backup, BackupRepository, BackupStatus
from diskvault.config import Settings
from diskvault.tools import qemu_img

KEY_BYTES = 32
MIN_CHARS = 32
MAX_BYTES = 4096
SECRET_ID = "dvkey"  # noqa: S105 (the id of a QEMU secret object, not a secret)
ITER_TIME_MS = 10
FORMAT = "luks"


@dataclass(frozen=True)
class Key:
    path: Path
    fingerprint: str
    data: bytes

    def objects(self) -> list[str]:
        """``--object`` arguments for qemu-img: the key is read by QEMU from its file."""
        return [qemu_img.secret_object(SECRET_ID, self.path)]

    def image(self, path: Path, depth: int = 0) -> qemu_img.Image:
        """``path`` opened with this key, and ``depth`` backing layers under it."""
        return qemu_img.Image(path, "qcow2", SECRET_ID, depth)

    def json_filename(self, path: Path, depth: int = 0) -> str:
        """A ``json:`` filename for ``path`` with its key (a safe rebase's new backing)."""
        import json

        opts: dict[str, Any] = {"driver": "qcow2", "file.filename": str(path)}
        for level in range(depth + 1):
            opts["backing." * level + "encrypt.key-secret"] = SECRET_ID
        return "json:" + json.dumps(opts)

    @property
    def hash_seed(self) -> int:
        """A 64-bit seed for the hash maps of raw sources, derived from the key."""
        digest = hashlib.sha256(b"diskvault hash map seed\0" + self.data).digest()
        return int.from_bytes(digest[:8], "little")


def check_combination(encryption: str | None, compression: str | None) -> None:
    """Refuse LUKS with compression: QEMU (7.2) writes the compressed clusters of an
    encrypted qcow2 without encrypting them (``qemu-img convert`` refuses ``-c`` with
    encryption for that reason; ``blockdev-backup compress`` does not check), so the
    guest's data would be readable in the repository."""
    if encryption == FORMAT and compression not in (None, "none"):
        raise InvalidRepository(
            detail=f"encryption '{FORMAT}' cannot be combined with compression '{compression}': "
            "QEMU stores compressed clusters of an encrypted qcow2 unencrypted; "
            "use one or the other"
        )


def fingerprint(data: bytes) -> str:
    """16 bytes of SHA-256 over a label and the key, as ``ab:cd:...`` (Proxmox style)."""
    digest = hashlib.sha256(b"diskvault backup key fingerprint\0" + data).digest()[:16]
    return ":".join(f"{b:02x}" for b in digest)


def load(path: str | Path) -> Key:
    """Read and check a key file; every problem is an :class:`InvalidKeyFile`."""
    path = Path(path)
    if not path.is_absolute():
        raise InvalidKeyFile(path=str(path), detail="give an absolute path")
    try:
        info = path.stat()
    except OSError as exc:
        raise InvalidKeyFile(path=str(path), detail=exc.strerror or str(exc)) from exc
    if not stat.S_ISREG(info.st_mode):
        raise InvalidKeyFile(path=str(path), detail="it is not a regular file")
    if info.st_mode & 0o077:
        raise InvalidKeyFile(
            path=str(path),
            detail=f"other users may read it (mode {info.st_mode & 0o777:o}): chmod 600",
        )
    if info.st_size > MAX_BYTES:
        detail = f"it holds {info.st_size} bytes: not a key file"
        raise InvalidKeyFile(path=str(path), detail=detail)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidKeyFile(path=str(path), detail=exc.strerror or str(exc)) from exc
    text = data.rstrip(b"\n")
    if not all(32 <= b < 127 for b in text):
        raise InvalidKeyFile(
            path=str(path), detail="it is binary, not a key file (printable text expected)"
        )
    if len(text) < MIN_CHARS:
        raise InvalidKeyFile(
            path=str(path), detail=f"{len(text)} characters is too short (at least {MIN_CHARS})"
        )
    return Key(path, fingerprint(data), data)


def create(path: str | Path) -> tuple[Key, str]:
    """A new random key file (mode 0600, never overwriting); returns it and its paper key."""
    path = Path(path)
    if not path.is_absolute():
        raise InvalidKeyFile(path=str(path), detail="give an absolute path")
    data = secrets.token_hex(KEY_BYTES).encode()  # no newline: QEMU reads the file as is
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise InvalidKeyFile(
            path=str(path), detail="it already exists; a key file is never overwritten"
        ) from None
    except OSError as exc:
        raise InvalidKeyFile(path=str(path), detail=exc.strerror or str(exc)) from exc
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    key = Key(path, fingerprint(data), data)
    return key, paper_key(key)


def paper_key(key: Key) -> str:
    """A printable copy of a key, like ``proxmox-backup-client key paperkey``."""
    text = key.data.decode()
    rows = [text[i : i + 16] for i in range(0, len(text), 16)]
    groups = [" ".join(r[j : j + 4] for j in range(0, len(r), 4)) for r in rows]
    lines = [
        "-----BEGIN DISKVAULT BACKUP KEY-----",
        f"fingerprint: {key.fingerprint}",
        f"created: {datetime.now(UTC).replace(microsecond=0).isoformat()}",
        "",
        *(f"{n + 1:02d}  {g}" for n, g in enumerate(groups)),
        "",
        "Restore: type the groups without spaces or line numbers into a file, no newline",
        "(printf %s 'KEY' > key; chmod 600 key), then",
        "qemu-img convert --object secret,id=s,file=key --image-opts \\",
        "  driver=qcow2,file.filename=POINT.qcow2,encrypt.key-secret=s,"
        "backing.encrypt.key-secret=s,... -O raw disk.raw",
        "-----END DISKVAULT BACKUP KEY-----",
    ]
    return "\n".join(lines) + "\n"


def resolve(repo: Any, fingerprint_needed: str | None, what: str) -> Key | None:
    """The key a point (or a new run) of ``repo`` needs, by fingerprint: the repository's
    current key file or one it had before a rekey. None for an unencrypted point."""
    if not fingerprint_needed:
        return None
    candidates = [repo.key_file] if repo.key_file else []
    old = [k for k in repo.keys or [] if k.get("fingerprint") == fingerprint_needed]
    candidates += [k.get("key_file") for k in old]
    problems = []
    for candidate in dict.fromkeys(c for c in candidates if c):
        try:
            key = load(candidate)
        except InvalidKeyFile as exc:
            problems.append(exc.message)
            continue
        if key.fingerprint == fingerprint_needed:
            return key
        problems.append(f"{candidate} holds key {key.fingerprint}")
    raise KeyUnavailable(
        what=what,
        fingerprint=fingerprint_needed,
        detail="; ".join(problems) or "no key file is configured",
    )


def template_dir(settings: Settings) -> Path:
    return settings.temp_dir / "backup-keys"


def template(key: Key, cache: Path, binary: str) -> Path:
    """An empty encrypted qcow2 made once per key: a new point is a copy of it (LUKS setup
    benchmarks PBKDF2 for over a second, so ``qemu-img create`` per point costs that)."""
    name = f"luks-{key.fingerprint.replace(':', '')}.qcow2"
    path = cache / name
    if path.is_file():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f"{name}.{os.getpid()}.partial")
    options: dict[str, qemu_img.OptionValue] = {
        "encrypt.format": FORMAT,
        "encrypt.key-secret": SECRET_ID,
        "encrypt.iter-time": ITER_TIME_MS,
    }
    try:
        qemu_img.create(part, "qcow2", 0, options=options, objects=key.objects(), binary=binary)
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
    return path


# -- repository keys ------------------------------------------------------------------


def set_key(
    settings: Settings,
    row: BackupRepository,
    encryption: str,
    key_file: str | None,
    create_key: bool,
) -> str | None:
    """Check (or create) the key of an encrypted repository; returns a new key's paper key."""
    check_combination(encryption, row.compression)
    row.encryption = encryption
    if encryption == "none":
        if key_file or create_key:
            raise InvalidRepository(detail="'key_file' and 'create_key' need encryption 'luks'")
        row.key_file = row.key_fingerprint = None
        return None
    path = key_file or (str(settings.BACKUP_KEY_FILE) if settings.BACKUP_KEY_FILE else None)
    if not path:
        raise InvalidRepository(
            detail="encryption 'luks' needs a key: give 'key_file' (and 'create_key': true "
            "for a new one) or set DISKVAULT_BACKUP_KEY_FILE"
        )
    paper = None
    if create_key:
        key, paper = create(path)
    else:
        key = load(path)
    row.key_file, row.key_fingerprint = str(key.path), key.fingerprint
    # The LUKS setup of the points' template costs a few seconds once per key: here,
    # rather than in the first backup.
    template(key, template_dir(settings), settings.QEMU_IMG_PATH)
    return paper


def point_count(session: Session, repo: BackupRepository) -> int:
    stmt = select(func.count()).where(
        Backup.repository_id == repo.id, Backup.status == BackupStatus.completed
    )
    return int(session.scalar(stmt) or 0)


def update_repository(
    session: Session, settings: Settings, repo: BackupRepository, changes: dict[str, Any]
) -> BackupRepository:
    """Compression applies to new points; encryption and its key change only while the
    repository holds no restore points (then it is a rekey: 409). A null is no change."""
    changes = {k: v for k, v in changes.items() if v is not None}
    if "compression" in changes:
        check_combination(changes.get("encryption", repo.encryption), changes["compression"])
        repo.compression = changes["compression"]
    crypt = {k: changes[k] for k in ("encryption", "key_file", "create_key") if k in changes}
    paper = None
    if crypt:
        if count := point_count(session, repo):
            session.rollback()
            raise EncryptionLocked(name=repo.name, count=count)
        paper = set_key(
            settings,
            repo,
            crypt.get("encryption", repo.encryption),
            crypt.get("key_file"),
            bool(crypt.get("create_key")),
        )
    session.commit()
    repo.paper_key = paper  # type: ignore[attr-defined]
    return repo


def rekey(
    session: Session,
    settings: Settings,
    repo: BackupRepository,
    key_file: str | None,
    create_key: bool,
) -> BackupRepository:
    """A new key for new chains; the old key (file and fingerprint) stays on record for
    the points written under it, which stay readable with it until they are pruned."""
    if repo.encryption != FORMAT:
        raise NotSupportedHere(
            f"repository {repo.name} is not encrypted; set its encryption while it is empty"
        )
    old = {"fingerprint": repo.key_fingerprint, "key_file": repo.key_file}
    paper = set_key(settings, repo, FORMAT, key_file, create_key)
    if repo.key_fingerprint == old["fingerprint"]:
        session.rollback()
        raise InvalidRepository(detail=f"{key_file} holds the current key; give a new key file")
    repo.keys = [*(k for k in repo.keys or [] if k["fingerprint"] != old["fingerprint"]), old]
    session.commit()
    repo.paper_key = paper  # type: ignore[attr-defined]
    return repo
