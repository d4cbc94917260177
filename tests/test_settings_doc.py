"""Issue 17 point 4: every setting documented; config show masks secrets; serve warns."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from diskvault.config import Settings
from diskvault.preflight import portal_holder, warnings
from diskvault.settings_doc import DOC, MASK, markdown, undocumented
from support.server import ServerProcess

BIN = str(Path(sys.executable).parent / "diskvault")
README = Path(__file__).resolve().parents[1] / "README.md"


def test_docs_settings_md_is_generated_and_current() -> None:
    assert undocumented() == []
    assert DOC.read_text() == markdown(), "run: python -m diskvault.settings_doc --write"
    for name in Settings.model_fields:
        assert f"`DISKVAULT_{name}`" in DOC.read_text()


def test_a_new_setting_without_a_meaning_fails() -> None:
    class Extended(Settings):
        BRAND_NEW_KNOB: int = 3

    class Commented(Settings):
        OTHER_KNOB: int = 3  # how many knobs

    assert undocumented(Extended) == ["BRAND_NEW_KNOB"]
    assert undocumented(Commented) == []


def test_readme_lists_what_a_first_run_needs() -> None:
    table = README.read_text().split("| Setting |", 1)[1].split("\n\n", 1)[0]
    for name in (
        "ORGANIZER_ROOTS",
        "IMPORT_ROOTS",
        "TGT_MANAGE",
        "ISCSI_PORTAL",
        "BOOT_ADVERTISE_ADDRESS",
        "BACKUP_REPOSITORY_PATH",
        "BACKUP_RESTORE_ROOTS",
        "RESTORE_MOUNT_ROOT",
    ):
        assert f"`{name}`" in table, name


def test_config_show_masks_secrets(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DISKVAULT_DATA_DIR": str(tmp_path / "d"),
        "DISKVAULT_ADMIN_PASSWORD": "very-secret-pw",
        "DISKVAULT_SECRET_KEY": "also-a-secret-key-123",
        "DISKVAULT_S3_SECRET_ACCESS_KEY": "s3-secret",
        "DISKVAULT_DATABASE_URL": "postgresql://dv:db-pass@127.0.0.1/dv",
    }
    out = subprocess.run(
        [BIN, "config", "show", "--json"], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    values = json.loads(out.stdout)
    assert values["ADMIN_PASSWORD"] == MASK and values["SECRET_KEY"] == MASK
    assert values["S3_SECRET_ACCESS_KEY"] == MASK
    assert values["DATABASE_URL"] == f"postgresql://dv:{MASK}@127.0.0.1/dv"
    assert values["RESTORE_MOUNT_ROOT"] == str(tmp_path / "d" / "mounts")
    assert set(values) == set(Settings.model_fields)
    table = subprocess.run(
        [BIN, "config", "show"], env={**env, "COLUMNS": "200"}, capture_output=True, text=True
    )
    assert "DISKVAULT_ORGANIZER_ROOTS" in table.stdout
    assert not any(s in out.stdout + table.stdout for s in ("very-secret", "db-pass", "s3-secret"))
    assert not (tmp_path / "d").exists()  # showing settings creates nothing


def test_warnings_for_empty_organizer_and_busy_portal(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        portal = f"127.0.0.1:{busy.getsockname()[1]}"
        settings = Settings(DATA_DIR=tmp_path, ISCSI_PORTAL=portal)
        assert portal_holder(portal) is None  # this process: diskvault itself
        lines = warnings(settings)
        assert len(lines) == 1 and "ORGANIZER_ROOTS is empty" in lines[0]
        # another process holding the portal is named, one line each, by `diskvault serve`
        holder = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(60)"], pass_fds=[busy.fileno()]
        )
        busy.close()
        try:
            server = ServerProcess(tmp_path / "srv", env={"DISKVAULT_ISCSI_PORTAL": portal})
            with server:
                log = server.log()
        finally:
            holder.kill()
            holder.wait()
    warned = [x for x in log.splitlines() if x.startswith("warning: ")]
    assert len(warned) == 2, log
    assert "ORGANIZER_ROOTS is empty" in warned[0]
    assert f"ISCSI_PORTAL {portal} is in use by python" in warned[1]
