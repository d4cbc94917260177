import subprocess
import sys
from pathlib import Path

import pytest

from diskvault.config import load_settings
from diskvault.errors import ConfigError


def test_defaults_live_in_data_dir(tmp_path: Path) -> None:
    s = load_settings(DATA_DIR=tmp_path / "d")
    assert s.image_dir == tmp_path / "d" / "images" and s.image_dir.is_dir()
    assert s.temp_dir.is_dir() and s.backup_dir.is_dir()
    assert f"sqlite:///{(tmp_path / 'd' / 'diskvault.db').absolute()}" == s.DATABASE_URL
    assert s.QUEUE_URL == ""
    # Whole-disk restores write files only here unless the host's administrator says so.
    assert s.restore_roots == [tmp_path / "d" / "restores"] and s.restore_roots[0].is_dir()
    assert s.BACKUP_RESTORE_NBD_TARGETS == [] and s.IMPORT_URL_ALLOWED_HOSTS == []


def test_secret_key_generated_once_and_persisted(tmp_path: Path) -> None:
    first = load_settings(DATA_DIR=tmp_path).SECRET_KEY
    second = load_settings(DATA_DIR=tmp_path).SECRET_KEY
    assert first == second and len(first) >= 32
    assert (tmp_path / "secret.key").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("overrides", "setting"),
    [
        ({"PORT": 70000}, "DISKVAULT_PORT"),
        ({"WORKERS": -1}, "DISKVAULT_WORKERS"),
        ({"DATABASE_URL": "mysql://x"}, "DISKVAULT_DATABASE_URL"),
        ({"SECRET_KEY": "short"}, "DISKVAULT_SECRET_KEY"),
        ({"BACKUP_RESTORE_ROOTS": ["/nonexistent/restores"]}, "DISKVAULT_BACKUP_RESTORE_ROOTS"),
    ],
)
def test_bad_values_name_the_setting(tmp_path: Path, overrides: dict, setting: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(DATA_DIR=tmp_path, **overrides)
    assert setting in err.value.message


def test_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError) as err:
        load_settings(DATA_DIR=tmp_path, IMAGE_STORAGE_PATH=blocker / "images")
    assert "DISKVAULT_IMAGE_STORAGE_PATH" in err.value.message


def test_serve_with_bad_config_prints_one_line(tmp_path: Path) -> None:
    bin_ = Path(sys.executable).parent / "diskvault"
    env = {"PATH": "/usr/bin:/bin", "DISKVAULT_DATA_DIR": str(tmp_path), "DISKVAULT_PORT": "nope"}
    proc = subprocess.run([bin_, "serve"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 78
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "DISKVAULT_PORT" in lines[0] and "Traceback" not in proc.stderr
