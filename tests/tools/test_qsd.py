"""qemu-storage-daemon over QMP: exports, backups with dirty bitmaps, jobs."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from diskvault.tools import mount, nbd
from diskvault.tools.process import Cancelled, run
from diskvault.tools.qmp_block import connect
from diskvault.tools.qsd import (
    QsdError,
    QsdJobError,
    QsdJobTimeout,
    QsdServer,
    backup_action,
    bitmap_add_action,
    kill_stale,
)
from support.qsd_test import TestQsd

MiB = 1024 * 1024

pytestmark = pytest.mark.skipif(shutil.which("qemu-storage-daemon") is None, reason="no QSD")


def qemu_img(*args: object) -> str:
    return run(["qemu-img", *[str(a) for a in args]], timeout=60).stdout


def qemu_io(image: str, fmt: str, *commands: str) -> None:
    argv = ["qemu-io", "-f", fmt]
    for c in commands:
        argv += ["-c", c]
    res = run([*argv, image], timeout=60)
    assert "error" not in res.stdout.lower(), res.stdout


def identical(a: object, b: object, fmt_a: str = "qcow2", fmt_b: str = "qcow2") -> bool:
    res = run(["qemu-img", "compare", "-f", fmt_a, "-F", fmt_b, str(a), str(b)], check=False)
    assert res.returncode in (0, 1), res.stderr
    return res.returncode == 0


def make_image(path: Path, size: int, *writes: tuple[int, int, int]) -> Path:
    """A qcow2 of ``size`` with (pattern, offset, length) writes."""
    qemu_img("create", "-q", "-f", "qcow2", path, size)
    if writes:
        qemu_io(str(path), "qcow2", *(f"write -P {p} {o} {n}" for p, o, n in writes))
    return path


@pytest.fixture
def qsd(tmp_path: Path) -> Iterator[TestQsd]:
    server = TestQsd(tmp_path / "qsd", name="test")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def nbd_url(qsd: QsdServer, node: str, bitmaps: tuple[str, ...] = ()) -> str:
    sock = qsd.workdir / "nbd.sock"
    qsd.add_nbd_server(sock)
    qsd.add_nbd_export(f"{node}-nbd", node, writable=True, bitmaps=bitmaps)
    return nbd.unix_url(sock, node)


def test_start_handshake_and_stop(tmp_path: Path) -> None:
    server = TestQsd(tmp_path / "w", name="t")
    with server:
        assert server.running
        assert server.qmp("query-version")["qemu"]["major"] >= 7
        assert int(server.pidfile.read_text()) == server.pid
        proc_pid = server.pid
    assert not server.running
    assert not Path(f"/proc/{proc_pid}").exists()
    assert not server.socket_path.exists()


def test_usable_from_other_threads(qsd: QsdServer) -> None:
    with ThreadPoolExecutor(4) as pool:
        versions = list(pool.map(lambda _: qsd.qmp("query-version")["qemu"]["major"], range(8)))
    assert len(set(versions)) == 1


def test_start_failure_carries_stderr(tmp_path: Path) -> None:
    server = TestQsd(tmp_path / "w", name="t", args=["--blockdev", "driver=nosuchdriver"])
    with pytest.raises(QsdError, match="nosuchdriver"):
        server.start()
    assert not server.running


def test_qmp_error_carries_description(qsd: QsdServer) -> None:
    with pytest.raises(QsdError, match="nosuchnode") as info:
        qsd.blockdev_del("nosuchnode")
    assert info.value.error_class == "GenericError"


def test_fuse_readonly_raw_view_equals_image(qsd: QsdServer, tmp_path: Path) -> None:
    base = make_image(tmp_path / "base.qcow2", 8 * MiB, (0xAA, 0, MiB))
    top = tmp_path / "top.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top)
    qemu_io(str(top), "qcow2", f"write -P 0x55 {3 * MiB} {MiB}")
    export = qsd.export_image_fuse(top, "qcow2", tmp_path / "view.raw")
    assert export.path.stat().st_size == 8 * MiB
    assert identical(export.path, top, "raw", "qcow2")
    with pytest.raises(OSError), open(export.path, "r+b", buffering=0) as fh:
        fh.write(b"x")
    qsd.close_export(export)
    assert export.path not in {m.mountpoint for m in mount.list_mounts()}


def test_fuse_writable_overlay_keeps_base(qsd: QsdServer, tmp_path: Path) -> None:
    base = make_image(tmp_path / "base.qcow2", 4 * MiB, (0x11, 0, 4 * MiB))
    saved = tmp_path / "saved.qcow2"
    shutil.copy(base, saved)
    overlay = tmp_path / "overlay.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", overlay)
    export = qsd.export_image_fuse(overlay, "qcow2", tmp_path / "rw.raw", writable=True)
    with open(export.path, "r+b") as fh:
        fh.seek(MiB)
        fh.write(b"\x77" * 65536)
        fh.flush()
        os.fsync(fh.fileno())
    qsd.close_export(export)
    assert identical(base, saved)
    assert not identical(overlay, base)
    qemu_io(str(overlay), "qcow2", f"read -P 0x77 {MiB} 65536", f"read -P 0x11 0 {MiB}")


def test_full_then_incremental_backup_chain(qsd: QsdServer, tmp_path: Path) -> None:
    size = 16 * MiB
    src = make_image(tmp_path / "src.qcow2", size, (0x01, 0, 8 * MiB), (0x02, 12 * MiB, MiB))
    at_full = tmp_path / "at_full.qcow2"
    shutil.copy(src, at_full)
    full = make_image(tmp_path / "full.qcow2", size)
    qsd.blockdev_add("src", filename=src)
    qsd.blockdev_add("full", filename=full)
    seen: list[tuple[int, int]] = []
    qsd.transaction(
        [bitmap_add_action("src", "b0"), backup_action("j-full", "src", "full", sync="full")]
    )
    qsd.wait_job("j-full", progress=lambda d, t: seen.append((d, t)))
    qsd.blockdev_del("full")
    assert seen and seen[-1] == (size, size)
    assert identical(full, at_full)

    url = nbd_url(qsd, "src")
    qemu_io(url, "raw", f"write -P 0x03 {2 * MiB} {MiB}", f"write -P 0x04 {14 * MiB} 65536")
    (bitmap,) = qsd.query_bitmaps("src")
    assert bitmap["name"] == "b0" and bitmap["persistent"]
    assert bitmap["count"] == MiB + 65536

    inc = tmp_path / "inc.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", full, "-F", "qcow2", inc)
    qsd.blockdev_add("inc", filename=inc)
    qsd.blockdev_backup("j-inc", "src", "inc", sync="incremental", bitmap="b0")
    qsd.wait_job("j-inc")
    qsd.blockdev_del("inc")
    assert qsd.query_bitmaps("src")[0]["count"] == 0
    assert identical(inc, url, "qcow2", "raw")
    mapping = json.loads(qemu_img("map", "--output=json", inc))
    own = sum(e["length"] for e in mapping if e["depth"] == 0 and e["data"])
    assert own == MiB + 65536


def test_bitmap_survives_restart(tmp_path: Path) -> None:
    src = make_image(tmp_path / "src.qcow2", 4 * MiB)
    with TestQsd(tmp_path / "q1", name="q1") as qsd:
        qsd.blockdev_add("src", filename=src)
        qsd.bitmap_add("src", "keep")
        qsd.bitmap_add("src", "volatile", persistent=False)
        qemu_io(nbd_url(qsd, "src"), "raw", "write -P 0x09 0 131072")
    info = json.loads(qemu_img("info", "--output=json", src))
    names = [b["name"] for b in info["format-specific"]["data"]["bitmaps"]]
    assert names == ["keep"]
    with TestQsd(tmp_path / "q2", name="q2") as qsd:
        qsd.blockdev_add("src", filename=src)
        (bitmap,) = qsd.query_bitmaps("src")
        assert (bitmap["name"], bitmap["count"]) == ("keep", 131072)
        qsd.bitmap_clear("src", "keep")
        assert qsd.query_bitmaps("src")[0]["count"] == 0
        qsd.bitmap_remove("src", "keep")
        assert qsd.query_bitmaps("src") == []


def _slow_backup(qsd: QsdServer, tmp_path: Path) -> None:
    src = make_image(tmp_path / "src.qcow2", 8 * MiB, (0x33, 0, 8 * MiB))
    qsd.blockdev_add("src", filename=src, read_only=True)
    qsd.blockdev_add("dst", filename=make_image(tmp_path / "dst.qcow2", 8 * MiB))
    qsd.blockdev_backup("slow", "src", "dst", speed=MiB)


def test_wait_job_cancel(qsd: QsdServer, tmp_path: Path) -> None:
    _slow_backup(qsd, tmp_path)
    seen: list[tuple[int, int]] = []
    with pytest.raises(Cancelled):
        qsd.wait_job(
            "slow", progress=lambda d, t: seen.append((d, t)), should_cancel=lambda: bool(seen)
        )
    assert seen[0][1] == 8 * MiB
    assert qsd.qmp("query-jobs") == []
    qsd.blockdev_del("dst")  # the cancelled job released its target


def test_wait_job_timeout_cancels(qsd: QsdServer, tmp_path: Path) -> None:
    _slow_backup(qsd, tmp_path)
    with pytest.raises(QsdJobTimeout, match="slow"):
        qsd.wait_job("slow", timeout=0.2)
    assert qsd.qmp("query-jobs") == []


def test_job_error_is_reported(qsd: QsdServer, tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], timeout=10)
    try:
        src = make_image(tmp_path / "src.qcow2", 4 * MiB, (0x44, 0, 4 * MiB))
        qsd.blockdev_add("src", filename=src, read_only=True)
        qsd.blockdev_add("dst", filename=make_image(small / "dst.qcow2", 4 * MiB))
        qsd.blockdev_backup("nospace", "src", "dst")
        with pytest.raises(QsdJobError, match=r"nospace.*No space left"):
            qsd.wait_job("nospace")
        assert qsd.qmp("query-jobs") == []
        qsd.blockdev_del("dst")
    finally:
        mount.umount(small)


def test_block_stream_flattens_overlay(qsd: QsdServer, tmp_path: Path) -> None:
    base = make_image(tmp_path / "base.qcow2", 4 * MiB, (0x21, 0, 2 * MiB))
    top = tmp_path / "top.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top)
    qemu_io(str(top), "qcow2", f"write -P 0x22 {MiB} {MiB}")
    expected = tmp_path / "expected.raw"
    qemu_img("convert", "-O", "raw", top, expected)
    qsd.blockdev_add("top", filename=top)
    qsd.block_stream("stream", "top")
    qsd.wait_job("stream")
    qsd.blockdev_del("top")
    info = json.loads(qemu_img("info", "--output=json", top))
    assert "backing-filename" not in info
    assert identical(top, expected, "qcow2", "raw")


def test_block_commit_active_layer(qsd: QsdServer, tmp_path: Path) -> None:
    base = make_image(tmp_path / "base.qcow2", 4 * MiB, (0x31, 0, 4 * MiB))
    top = tmp_path / "top.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top)
    qemu_io(str(top), "qcow2", f"write -P 0x32 {MiB} 65536")
    qsd.blockdev_add("top", filename=top)
    qsd.block_commit("commit", "top")
    qsd.wait_job("commit")
    qsd.blockdev_del("top")
    qemu_io(str(base), "qcow2", f"read -P 0x32 {MiB} 65536", "read -P 0x31 0 65536")


def test_kill_stale_after_crash_then_stop_unmounts(tmp_path: Path) -> None:
    image = make_image(tmp_path / "img.qcow2", MiB)
    server = TestQsd(tmp_path / "w", name="t")
    server.start()
    try:
        export = server.export_image_fuse(image, "qcow2", tmp_path / "img.raw")
        assert kill_stale(server.workdir)
        assert server._proc is not None
        assert server._proc.wait(10) != 0
        assert not kill_stale(server.workdir)
        assert export.path in {m.mountpoint for m in mount.list_mounts(tmp_path)}
    finally:
        server.stop()
    assert mount.list_mounts(tmp_path) == []


def test_connect_to_another_monitor(tmp_path: Path) -> None:
    """The VM case: a second QMP monitor on a socket we did not create."""
    sock = tmp_path / "vm.sock"
    extra = ["--chardev", f"socket,path={sock},server=on,wait=off,id=vm", "--monitor", "chardev=vm"]
    with TestQsd(tmp_path / "w", name="t", args=extra) as server, connect(sock) as client:
        client.blockdev_add("n0", filename=make_image(tmp_path / "a.qcow2", MiB), read_only=True)
        assert server.query_node("n0")["ro"] is True
    with pytest.raises(QsdError, match="QMP connect"):
        connect(sock, timeout=1.0)


def test_fuse_export_needs_a_file_mountpoint(qsd: QsdServer, tmp_path: Path) -> None:
    qsd.blockdev_add("n0", filename=make_image(tmp_path / "a.qcow2", MiB), read_only=True)
    with pytest.raises(QsdError, match="is a directory"):
        qsd.add_fuse_export("e0", "n0", tmp_path)
