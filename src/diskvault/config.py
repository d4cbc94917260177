"""Settings, read from ``DISKVAULT_*`` environment variables (and ``.env``).

Paths default to folders inside ``DATA_DIR``. :func:`get_settings` validates
them and creates them; a bad value raises :class:`ConfigError` naming the
setting, which ``diskvault serve`` prints as one line before exiting.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from diskvault.errors import ConfigError


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DISKVAULT_", env_file=".env", extra="ignore")

    DATA_DIR: Path = Path("./var")
    DATABASE_URL: str = ""
    QUEUE_URL: str = ""  # empty: embedded SqliteHuey in DATA_DIR
    QUEUE_NAME: str = Field(default="diskvault", pattern=r"^[A-Za-z0-9_.-]+$")
    WORKERS: int = Field(default=2, ge=0, le=64)
    NODE: str = Field(default_factory=lambda: os.uname().nodename)

    IMAGE_STORAGE_PATH: Path | None = None
    TEMP_STORAGE_PATH: Path | None = None
    BACKUP_REPOSITORY_PATH: Path | None = None
    IMPORT_ROOTS: list[Path] = Field(default_factory=list)

    QEMU_IMG_PATH: str = "qemu-img"
    QEMU_IO_PATH: str = "qemu-io"
    QEMU_STORAGE_DAEMON_PATH: str = "qemu-storage-daemon"
    QEMU_SYSTEM_PATH: str = "qemu-system-x86_64"
    TGTADM_PATH: str = "tgtadm"
    TGTD_PATH: str = "tgtd"

    BIND_HOST: str = "127.0.0.1"
    PORT: int = Field(default=8080, ge=1, le=65535)
    CORS_ORIGINS: list[str] = Field(default_factory=list)
    MAX_BODY_BYTES: int = Field(default=1024 * 1024, ge=1024)
    # Peers whose X-Forwarded-For/-Proto are believed (IPs or CIDRs); empty: none.
    TRUSTED_PROXIES: list[str] = Field(default_factory=list)

    ADMIN_PASSWORD: str | None = None
    SECRET_KEY: str = ""
    ACCESS_TOKEN_MINUTES: int = Field(default=30, ge=1)
    REFRESH_TOKEN_DAYS: int = Field(default=14, ge=1)
    LOGIN_MAX_FAILURES_PER_USER: int = Field(default=5, ge=1)  # per LOGIN_WINDOW_S
    LOGIN_MAX_FAILURES_PER_IP: int = Field(default=20, ge=1)  # per LOGIN_WINDOW_S
    LOGIN_WINDOW_S: float = Field(default=300.0, gt=0)
    LOGIN_HASH_WORKERS: int = Field(default=2, ge=1, le=64)  # argon2 checks at once
    WEB_SESSION_HOURS: int = Field(default=12, ge=1, le=24 * 30)  # console sign-in lifetime

    JOB_HEARTBEAT_S: float = Field(default=2.0, gt=0)
    JOB_HEARTBEAT_TIMEOUT_S: float = Field(default=30.0, gt=0)
    JOB_REAPER_INTERVAL_S: float = Field(default=5.0, gt=0)
    JOB_RETRY_BASE_S: float = Field(default=2.0, ge=0)
    JOB_RETRY_FACTOR: float = Field(default=2.0, ge=1)
    JOB_RETRY_MAX_ATTEMPTS: int = Field(default=3, ge=1)
    JOB_CANCEL_GRACE_S: float = Field(default=3.0, gt=0)
    # A clean stop waits this long for interrupted jobs to wind down (systemd's
    # TimeoutStopSec=30 also covers uvicorn's 10 s for open requests).
    SHUTDOWN_GRACE_S: float = Field(default=15.0, ge=0, le=3600)

    # -- images --
    IMAGE_STORE_URL: str = ""  # empty: IMAGE_STORAGE_PATH; or s3://bucket/prefix?endpoint_url=...
    S3_ACCESS_KEY_ID: str | None = None
    S3_SECRET_ACCESS_KEY: SecretStr | None = None
    DEFAULT_TARGET_FORMAT: str = Field(default="raw", pattern=r"^(raw|qcow2)$")
    MAX_VIRTUAL_SIZE: int = Field(default=4 * 1024**4, gt=0)  # 4 TiB
    # Names, addresses or networks URL imports may reach even when they are internal
    # (loopback, private, link-local, metadata); public addresses need no entry.
    IMPORT_URL_ALLOWED_HOSTS: list[str] = Field(default_factory=list)
    IMPORT_URL_ALLOWED_PORTS: list[int] = Field(default_factory=lambda: [80, 443])
    IMPORT_URL_TIMEOUT_S: float = Field(default=60.0, gt=0)  # connect/read stall, not total
    IMAGE_CONVERT_RATE_LIMIT: int = Field(default=0, ge=0)  # bytes/s per conversion; 0: unlimited
    UPLOAD_IDLE_TIMEOUT_S: float = Field(default=60.0, gt=0)  # an upload body silent this long
    UPLOADS_PER_USER: int = Field(default=4, ge=1)  # uploads in progress at once, per user
    JOBS_PER_USER: int = Field(default=32, ge=1)  # queued or running jobs a user may start

    # -- organizer --
    ORGANIZER_ROOTS: list[str] = Field(default_factory=list)  # file:// paths or s3:// URLs
    ORGANIZER_APPLY_DELAY_S: float = Field(default=0.0, ge=0)  # tests: pause between actions

    # -- targets --
    TARGET_BACKEND: str = Field(default="tgt", pattern=r"^(tgt|lio)$")
    TGT_MANAGE: bool = False  # start tgtd ourselves when it is not running
    TGT_CONTROL_PORT: int = Field(default=0, ge=0, le=32767)  # tgtadm -C limit
    ISCSI_PORTAL: str = "0.0.0.0:3260"
    IQN_DOMAIN: str = "io.diskvault"  # already reversed: iqn.<IQN_DATE>.io.diskvault:<name>
    IQN_DATE: str = Field(default="2026-01", pattern=r"^\d{4}-\d{2}$")
    TARGET_RECONCILE_INTERVAL_S: float = Field(default=30.0, gt=0)
    TARGET_BACKEND_TIMEOUT_S: float = Field(default=10.0, gt=0)

    # -- boot --
    BOOT_ADVERTISE_ADDRESS: str | None = None
    BOOT_RATE_LIMIT_PER_MIN: int = Field(default=120, ge=1)  # per client IP
    BOOT_RATE_LIMIT_PER_MAC_PER_MIN: int = Field(default=12, ge=1)
    BOOT_UNKNOWN_RETRY_S: int = Field(default=30, ge=1)
    WRITEBACK_PATH: Path | None = None  # default DATA_DIR/writebacks
    BOOT_UNKNOWN_CHAIN_URL: str | None = None  # unknown MACs chain this menu instead of retrying
    BOOT_TFTP_ROOT: str = "/srv/tftp"  # for the generated dnsmasq snippet
    BOOT_SESSION_CHECK_INTERVAL_S: float = Field(default=10.0, gt=0)
    BOOT_SESSION_CONNECT_TIMEOUT_S: float = Field(default=300.0, gt=0)  # booted, never logged in
    BOOT_WRITEBACK_MIN_FREE_BYTES: int = Field(default=256 * 1024**2, ge=0)
    BOOT_VERSIONS_KEEP: int = Field(default=5, ge=1)  # newest versions per image never expired
    BOOT_VERSION_MIN_AGE_S: float = Field(default=7 * 86400.0, ge=0)
    BOOT_VERSION_EXPIRY_INTERVAL_S: float = Field(default=3600.0, gt=0)
    BOOT_VERIFY_CONCURRENCY: int = Field(default=2, ge=1, le=64)  # QEMUs booting points at once
    BOOT_VERIFY_TIMEOUT_S: float = Field(default=120.0, gt=0, le=3600)  # unless the source says
    BOOT_VERIFY_MEMORY_MB: int = Field(default=512, ge=64, le=65536)  # guest RAM per check
    BOOT_VERIFY_ACCEL: Literal["auto", "kvm", "tcg"] = "auto"  # auto: KVM if /dev/kvm opens

    # -- backups --
    BACKUP_MAX_CHAIN_LENGTH: int = Field(default=30, ge=1)
    BACKUP_LOCK_WAIT_S: float = Field(default=6 * 3600.0, gt=0)  # a run waits this long per disk
    BACKUP_POLICY_INTERVAL_S: float = Field(default=30.0, gt=0)  # how often schedules are checked
    BACKUP_RESTORE_ROOTS: list[Path] | None = None  # default [DATA_DIR/restores]; []: none
    # NBD servers whole-disk restores may write to: "host:port" or a unix socket path.
    BACKUP_RESTORE_NBD_TARGETS: list[str] = Field(default_factory=list)  # empty: none
    BACKUP_RESTORE_NBD_TIMEOUT_S: float = Field(default=5.0, gt=0, le=120)
    BACKUP_KEY_FILE: Path | None = None  # default key of repositories with encryption "luks"

    # -- restore --
    RESTORE_IDLE_TIMEOUT_S: int = Field(default=3600, ge=10)
    RESTORE_MOUNT_ROOT: Path | None = None  # default DATA_DIR/mounts
    RESTORE_SWEEP_INTERVAL_S: float = Field(default=30.0, gt=0)  # idle-expiry check period
    RESTORE_MAX_MOUNTS: int = Field(default=32, ge=1)  # active mounts per node

    LOG_LEVEL: str = "INFO"
    LOG_FORMAT: str = "auto"  # auto | json | console

    @field_validator("TRUSTED_PROXIES")
    @classmethod
    def _proxy_addresses(cls, value: list[str]) -> list[str]:
        for item in value:
            if item != "*":
                ipaddress.ip_network(item, strict=False)  # ValueError names the bad entry
        return value

    @model_validator(mode="after")
    def _fill_paths(self) -> Settings:
        data = self.DATA_DIR
        if self.IMAGE_STORAGE_PATH is None:
            self.IMAGE_STORAGE_PATH = data / "images"
        if self.TEMP_STORAGE_PATH is None:
            self.TEMP_STORAGE_PATH = data / "tmp"
        if self.BACKUP_REPOSITORY_PATH is None:
            self.BACKUP_REPOSITORY_PATH = data / "backups"
        if self.WRITEBACK_PATH is None:
            self.WRITEBACK_PATH = data / "writebacks"
        if self.RESTORE_MOUNT_ROOT is None:
            self.RESTORE_MOUNT_ROOT = data / "mounts"
        if self.BACKUP_RESTORE_ROOTS is None:
            self.BACKUP_RESTORE_ROOTS = [data / "restores"]
        if not self.DATABASE_URL:
            self.DATABASE_URL = f"sqlite:///{(data / 'diskvault.db').absolute()}"
        return self

    @property
    def image_dir(self) -> Path:
        assert self.IMAGE_STORAGE_PATH is not None
        return self.IMAGE_STORAGE_PATH

    @property
    def temp_dir(self) -> Path:
        assert self.TEMP_STORAGE_PATH is not None
        return self.TEMP_STORAGE_PATH

    @property
    def backup_dir(self) -> Path:
        assert self.BACKUP_REPOSITORY_PATH is not None
        return self.BACKUP_REPOSITORY_PATH

    @property
    def writeback_dir(self) -> Path:
        assert self.WRITEBACK_PATH is not None
        return self.WRITEBACK_PATH

    @property
    def restore_roots(self) -> list[Path]:
        assert self.BACKUP_RESTORE_ROOTS is not None
        return self.BACKUP_RESTORE_ROOTS

    @property
    def mount_root(self) -> Path:
        assert self.RESTORE_MOUNT_ROOT is not None
        return self.RESTORE_MOUNT_ROOT

    def storage_paths(self) -> dict[str, Path]:
        return {
            "DATA_DIR": self.DATA_DIR,
            "IMAGE_STORAGE_PATH": self.image_dir,
            "TEMP_STORAGE_PATH": self.temp_dir,
            "BACKUP_REPOSITORY_PATH": self.backup_dir,
            "WRITEBACK_PATH": self.writeback_dir,
            "RESTORE_MOUNT_ROOT": self.mount_root,
        }

    def prepare(self) -> None:
        """Create and check every path; load or create the secret key."""
        for name, path in self.storage_paths().items():
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    setting=f"DISKVAULT_{name}", detail=f"{path}: {exc.strerror}"
                ) from exc
            if not path.is_dir():
                raise ConfigError(setting=f"DISKVAULT_{name}", detail=f"{path} is not a directory")
            if not os.access(path, os.W_OK | os.X_OK):
                raise ConfigError(setting=f"DISKVAULT_{name}", detail=f"{path} is not writable")
        if self.restore_roots == [self.DATA_DIR / "restores"]:
            self.restore_roots[0].mkdir(exist_ok=True)  # the default; others are the admin's
        for root in self.restore_roots:
            if not root.is_dir():
                raise ConfigError(
                    setting="DISKVAULT_BACKUP_RESTORE_ROOTS", detail=f"{root} is not a directory"
                )
        for root in self.IMPORT_ROOTS:
            if not root.is_dir():
                raise ConfigError(
                    setting="DISKVAULT_IMPORT_ROOTS", detail=f"{root} is not a directory"
                )
        if not self.DATABASE_URL.startswith(("sqlite", "postgresql")):
            raise ConfigError(
                setting="DISKVAULT_DATABASE_URL",
                detail="only sqlite:/// and postgresql:// URLs are supported",
            )
        if not self.SECRET_KEY:
            self.SECRET_KEY = _load_or_create_secret(self.DATA_DIR / "secret.key")
        elif len(self.SECRET_KEY) < 16:
            raise ConfigError(
                setting="DISKVAULT_SECRET_KEY", detail="must be at least 16 characters"
            )


def _load_or_create_secret(path: Path) -> str:
    if path.exists():
        return path.read_text().strip()
    key = secrets.token_urlsafe(48)
    tmp = path.with_suffix(".partial")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return key


def load_settings(**overrides: object) -> Settings:
    """Build and prepare settings; pydantic errors become one-line ConfigErrors."""
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        err = exc.errors()[0]
        name = "DISKVAULT_" + str(err["loc"][0]) if err["loc"] else "DISKVAULT_*"
        raise ConfigError(setting=name, detail=err["msg"]) from None
    settings.prepare()
    return settings


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
