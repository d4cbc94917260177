"""docs/settings.md, generated from :class:`diskvault.config.Settings`.

Each setting's meaning is its ``Field(description=...)``, else an entry of
:data:`MEANINGS`, else the comment on (or just above) its line in config.py.
A setting with none of them fails ``tests/test_settings_doc.py``.

Regenerate: ``python -m diskvault.settings_doc --write`` (or ``make settings-doc``).
"""

from __future__ import annotations

import inspect
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError
from pydantic_core import PydanticUndefined

from diskvault.config import Settings
from diskvault.errors import ConfigError

DOC = Path(__file__).resolve().parents[2] / "docs" / "settings.md"

# Defaults that are computed at start-up rather than written in the field.
SHOWN_DEFAULTS = {
    "DATA_DIR": "./var",
    "DATABASE_URL": "sqlite:///$DATA_DIR/diskvault.db",
    "QUEUE_URL": "embedded SqliteHuey in $DATA_DIR",
    "NODE": "this host's name",
    "IMAGE_STORAGE_PATH": "$DATA_DIR/images",
    "TEMP_STORAGE_PATH": "$DATA_DIR/tmp",
    "BACKUP_REPOSITORY_PATH": "$DATA_DIR/backups",
    "WRITEBACK_PATH": "$DATA_DIR/writebacks",
    "RESTORE_MOUNT_ROOT": "$DATA_DIR/mounts",
    "BACKUP_RESTORE_ROOTS": "[$DATA_DIR/restores]",
    "ADMIN_PASSWORD": "generated, printed once at first start",
    "SECRET_KEY": "generated, kept in $DATA_DIR/secret.key",
}

MEANINGS = {
    "DATA_DIR": "state: SQLite database, embedded queue, secret key; other paths default inside",
    "DATABASE_URL": "sqlite:/// or postgresql:// URL",
    "QUEUE_URL": "redis://host:port/db to share jobs with `diskvault worker` processes",
    "QUEUE_NAME": "Huey queue name (one per deployment on a shared Redis)",
    "WORKERS": "worker threads inside `diskvault serve` (0: none, jobs wait for a worker)",
    "NODE": "this host's node name, for jobs bound to a host (mounts, targets)",
    "IMAGE_STORAGE_PATH": "the image library",
    "TEMP_STORAGE_PATH": "uploads and partial files",
    "BACKUP_REPOSITORY_PATH": "the default backup repository (`default`, also called `local`)",
    "IMPORT_ROOTS": "JSON list of server folders `images/import` may read; empty: none",
    "QEMU_IMG_PATH": "qemu-img binary",
    "QEMU_IO_PATH": "qemu-io binary",
    "QEMU_STORAGE_DAEMON_PATH": "qemu-storage-daemon binary",
    "QEMU_SYSTEM_PATH": "QEMU system emulator (boot tests and checks)",
    "TGTADM_PATH": "tgtadm binary",
    "TGTD_PATH": "tgtd binary",
    "BIND_HOST": "address the API listens on",
    "PORT": "TCP port of the API",
    "CORS_ORIGINS": "JSON list of allowed browser origins",
    "MAX_BODY_BYTES": "largest request body, checked after auth and before reading "
    "(uploads stream)",
    "TRUSTED_PROXIES": "JSON list of proxy IPs/CIDRs whose X-Forwarded-For/-Proto are believed",
    "ADMIN_PASSWORD": "password of the first `admin` user",
    "SECRET_KEY": "JWT signing key (at least 16 characters)",
    "ACCESS_TOKEN_MINUTES": "access token lifetime",
    "REFRESH_TOKEN_DAYS": "refresh token lifetime",
    "LOGIN_MAX_FAILURES_PER_USER": "failed logins per username in LOGIN_WINDOW_S before 429",
    "LOGIN_MAX_FAILURES_PER_IP": "failed logins per client address in LOGIN_WINDOW_S before 429",
    "LOGIN_WINDOW_S": "window of the login failure counts, seconds",
    "LOGIN_HASH_WORKERS": "password (argon2) checks at once, in low-priority threads",
    "JOB_HEARTBEAT_S": "how often a running job reports it is alive",
    "JOB_HEARTBEAT_TIMEOUT_S": "a job silent this long is failed (or retried) by the reaper",
    "JOB_REAPER_INTERVAL_S": "how often the reaper looks for silent jobs",
    "JOB_RETRY_BASE_S": "first retry delay",
    "JOB_RETRY_FACTOR": "retry delay multiplier",
    "JOB_RETRY_MAX_ATTEMPTS": "attempts before a retriable job fails",
    "JOB_CANCEL_GRACE_S": "time a cancelled job's child processes get before SIGKILL",
    "IMAGE_STORE_URL": "where images live: empty for IMAGE_STORAGE_PATH, or s3://bucket/prefix",
    "S3_ACCESS_KEY_ID": "S3 access key for IMAGE_STORE_URL and s3 repositories",
    "S3_SECRET_ACCESS_KEY": "S3 secret key (masked by `diskvault config show`)",
    "DEFAULT_TARGET_FORMAT": "format images are converted to on import: raw or qcow2",
    "MAX_VIRTUAL_SIZE": "largest virtual size an image may declare, bytes",
    "IMPORT_URL_ALLOWED_HOSTS": "JSON list of internal names/addresses/networks URL imports "
    "may reach (loopback, private, link-local, metadata are refused otherwise)",
    "IMPORT_URL_ALLOWED_PORTS": "JSON list of ports URL imports may connect to",
    "IMPORT_URL_TIMEOUT_S": "URL import connect/read stall limit (not total time)",
    "IMAGE_CONVERT_RATE_LIMIT": "bytes/s per conversion; 0: unlimited",
    "ORGANIZER_ROOTS": "JSON list of file:// paths or s3:// URLs the organizer may scan "
    "and change; empty: the organizer refuses everything",
    "ORGANIZER_APPLY_DELAY_S": "pause between organizer actions (tests)",
    "TARGET_BACKEND": "iSCSI target backend: tgt or lio",
    "TGT_MANAGE": "start tgtd ourselves when it is not running",
    "TGT_CONTROL_PORT": "tgtadm control port (-C) of the tgtd to use",
    "ISCSI_PORTAL": "address:port initiators connect to; the default can clash with a "
    "system tgtd (`diskvault serve` warns)",
    "IQN_DOMAIN": "reversed domain in IQNs: iqn.<IQN_DATE>.<IQN_DOMAIN>:<name>",
    "IQN_DATE": "year-month in IQNs",
    "TARGET_RECONCILE_INTERVAL_S": "how often targets are checked against the backend",
    "TARGET_BACKEND_TIMEOUT_S": "timeout of one backend command",
    "BOOT_ADVERTISE_ADDRESS": "address iPXE scripts tell clients to reach (default: the "
    "address the request came to)",
    "BOOT_RATE_LIMIT_PER_MIN": "/boot/ipxe requests per client address per minute",
    "BOOT_RATE_LIMIT_PER_MAC_PER_MIN": "/boot/ipxe requests per MAC per minute",
    "BOOT_UNKNOWN_RETRY_S": "unknown MACs are told to retry after this many seconds",
    "WRITEBACK_PATH": "per-machine writeback overlays of diskless boots",
    "BOOT_UNKNOWN_CHAIN_URL": "menu URL unknown MACs chain to instead of retrying",
    "BOOT_TFTP_ROOT": "TFTP root in the generated dnsmasq snippet",
    "BOOT_SESSION_CHECK_INTERVAL_S": "how often boot sessions are checked",
    "BOOT_SESSION_CONNECT_TIMEOUT_S": "a session booted but never logged in ends after this",
    "BOOT_WRITEBACK_MIN_FREE_BYTES": "free space WRITEBACK_PATH must keep before a boot",
    "BOOT_VERSIONS_KEEP": "newest versions per image never expired",
    "BOOT_VERSION_MIN_AGE_S": "versions younger than this are never expired",
    "BOOT_VERSION_EXPIRY_INTERVAL_S": "how often old versions are expired",
    "BACKUP_MAX_CHAIN_LENGTH": "points per chain before consolidation (per policy: "
    "max_chain_length)",
    "BACKUP_LOCK_WAIT_S": "how long a run waits for each disk's lock",
    "BACKUP_POLICY_INTERVAL_S": "how often policy schedules are checked",
    "BACKUP_RESTORE_ROOTS": "JSON list of folders whole-disk restores to a file may write "
    "into (403 elsewhere); []: none",
    "BACKUP_RESTORE_NBD_TARGETS": "JSON list of NBD servers (host:port or socket path) "
    "restores may write to; empty: none",
    "BACKUP_RESTORE_NBD_TIMEOUT_S": "connect timeout to those NBD servers",
    "RESTORE_IDLE_TIMEOUT_S": "an idle file-level restore mount is unmounted after this",
    "RESTORE_MOUNT_ROOT": "where file-level restore mounts live (server side)",
    "RESTORE_SWEEP_INTERVAL_S": "how often idle mounts are looked for",
    "RESTORE_MAX_MOUNTS": "active restore mounts per node",
    "LOG_LEVEL": "DEBUG, INFO, WARNING or ERROR",
    "LOG_FORMAT": "auto (console on a TTY, else JSON), json or console",
}

_FIELD = re.compile(r"^    ([A-Z][A-Z0-9_]*)\s*:[^#]*(?:#\s*(.*))?$")
_SECTION = re.compile(r"^    # -- (.+?) --")


def _source_notes(cls: type[Settings]) -> tuple[dict[str, str], dict[str, str]]:
    """Per field: its trailing (or preceding) comment, and its ``# -- section --``,
    read from the class and every settings class it derives from."""
    comments: dict[str, str] = {}
    sections: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if isinstance(klass, type) and issubclass(klass, Settings):
            _read_notes(klass, comments, sections)
    return comments, sections


def _read_notes(cls: type[Settings], comments: dict[str, str], sections: dict[str, str]) -> None:
    section, above = "general", list[str]()
    for line in textwrap.dedent(inspect.getsource(cls)).splitlines():
        if m := _SECTION.match(line):
            section, above = m.group(1), []
        elif line.strip().startswith("#"):
            above.append(line.strip().lstrip("#").strip())
        elif m := _FIELD.match(line):
            sections[m.group(1)] = section
            note = m.group(2) or " ".join(above)
            if note:
                comments[m.group(1)] = note
            above = []
        else:  # a blank line ends a ``# -- section --`` block
            section, above = (section if line.strip() else "general"), []


def _type(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if not hasattr(annotation, "__args__") else None
    text = text or str(annotation)
    return re.sub(r"\b(?:pathlib|pydantic\.types|typing)\.", "", text).replace("NoneType", "None")


def _default(name: str, field: Any) -> str:
    if name in SHOWN_DEFAULTS:
        return SHOWN_DEFAULTS[name]
    value = field.default_factory() if field.default_factory else field.default
    if value is PydanticUndefined or value is None or value == "" or value == []:
        return "none"
    return str(value)


def rows(cls: type[Settings] = Settings) -> list[tuple[str, str, str, str, str]]:
    """(section, name, type, default, meaning) per setting; meaning may be empty."""
    comments, sections = _source_notes(cls)
    out = []
    for name, field in cls.model_fields.items():
        meaning = field.description or MEANINGS.get(name) or comments.get(name, "")
        out.append(
            (
                sections.get(name, "general"),
                name,
                _type(field.annotation),
                _default(name, field),
                meaning,
            )
        )
    return out


_SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN")
_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@/\s]+@")
_QUERY_SECRET = re.compile(r"((?:secret|password|token)[^=&]*=)[^&]+", re.IGNORECASE)
MASK = "********"


def mask(name: str, value: Any) -> Any:
    """``value`` as ``config show`` prints it: secrets hidden, URL passwords starred."""
    if isinstance(value, SecretStr) or _SECRET_NAME.search(name):
        return MASK if value else value
    if isinstance(value, str):
        return _QUERY_SECRET.sub(r"\1" + MASK, _URL_PASSWORD.sub(r"\1" + MASK + "@", value))
    return value


def effective(settings: Settings) -> dict[str, Any]:
    """Every setting's value (derived paths filled in), secrets masked, JSON-ready."""
    out: dict[str, Any] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, list):
            value = [str(v) if isinstance(v, Path) else v for v in value]
        out[name] = mask(name, value)
    return out


def current() -> Settings:
    """The settings of this environment, without creating folders or a secret key."""
    try:
        return Settings()
    except ValidationError as exc:
        err = exc.errors()[0]
        name = "DISKVAULT_" + str(err["loc"][0]) if err["loc"] else "DISKVAULT_*"
        raise ConfigError(setting=name, detail=err["msg"]) from None


def undocumented(cls: type[Settings] = Settings) -> list[str]:
    return [name for _, name, _, _, meaning in rows(cls) if not meaning]


def markdown() -> str:
    lines = [
        "# Settings",
        "",
        "Every setting is an environment variable `DISKVAULT_<NAME>` (or a line in `.env`).",
        'Lists are JSON (`["/srv/a", "/srv/b"]`). `diskvault config show` prints the',
        "effective values with secrets masked (`--json` for scripts).",
        "",
        "Generated from `diskvault.config.Settings` by `python -m diskvault.settings_doc --write`",
        "(`make settings-doc`); `tests/test_settings_doc.py` fails when this file is stale or a",
        "setting has no meaning. Do not edit by hand.",
    ]
    section = None
    for sec, name, typ, default, meaning in sorted(rows(), key=lambda r: r[0] != "general"):
        if sec != section:
            section = sec
            lines += [
                "",
                f"## {sec}",
                "",
                "| Setting | Type | Default | Meaning |",
                "|---|---|---|---|",
            ]
        cells = [c.replace("|", "\\|") for c in (typ, default, meaning)]
        lines.append(f"| `DISKVAULT_{name}` | `{cells[0]}` | `{cells[1]}` | {cells[2]} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = markdown()
    if "--write" in args:
        DOC.write_text(text)
        print(f"wrote {DOC}")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
