"""Diskless boot: provisioning machines through the API, and QEMU boots end to end.

Starts a real ``diskvault serve`` that manages its own tgtd (private control
port, free 127.0.0.1 portal), uploads a 16 MiB golden image whose boot sector
prints a marker on COM1, and registers N machines through the API (each gets
its writeback layer: a qcow2 overlay exported by its own qemu-storage-daemon
over FUSE, and its own iSCSI target). Then it PXE-boots QEMU machines (TCG)
that chain ``/boot/ipxe`` and sanboot their target, timing from QEMU start to
the marker on the serial port: one machine alone, then 4 machines at once
(distinct MACs). Each boot recreates the machine's discard-mode overlay.

    sudo .venv/bin/python bench/boot.py                    # 50 machines, 2 rounds
    sudo .venv/bin/python bench/boot.py --machines 10 --rounds 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import Table, ratio, timer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.boot_env import cleanup_layers, pxe_vm, tgtd_env, write_tftp  # noqa: E402
from support.boot_sectors import MARKER, marker_sector, write_disk  # noqa: E402
from support.server import ServerProcess  # noqa: E402
from support.targets_images import upload_image  # noqa: E402
from support.targets_tgtd import kill_tgtd, tgtd_pid  # noqa: E402

PARALLEL = 4


def mac(i: int) -> str:
    return f"52:54:00:be:{i // 256:02x}:{i % 256:02x}"


def boot_all(tftp: Path, logs: Path, macs: list[str]) -> list[float]:
    """Start one VM per MAC at once; seconds from the first start until each showed the marker."""
    vms = [pxe_vm(tftp, m, logs / f"{m.replace(':', '')}.log") for m in macs]
    results: list[float] = [0.0] * len(vms)
    errors: list[BaseException] = []
    started = time.monotonic()

    def wait(i: int) -> None:
        try:
            vms[i].wait_for_serial(MARKER, timeout=180)
            results[i] = time.monotonic() - started
        except BaseException as exc:
            errors.append(exc)

    try:
        for vm in vms:
            vm.start()
        threads = [threading.Thread(target=wait, args=(i,)) for i in range(len(vms))]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        for vm in vms:
            vm.stop()
    if errors:
        raise errors[0]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    env = tgtd_env()
    control_port = int(env["DISKVAULT_TGT_CONTROL_PORT"])
    with tempfile.TemporaryDirectory(prefix="dv-bench-boot-") as tmp:
        data = Path(tmp) / "server"
        server = ServerProcess(data, env=env)
        server.start()
        try:
            with server.client(server.login()) as client:
                golden = write_disk(Path(tmp) / "marker.raw", marker_sector())
                image = upload_image(client, "bench-marker", golden.read_bytes())
                assert image is not None, "the images upload API is required"
                with timer() as provision:
                    for i in range(args.machines):
                        body = {"name": f"bench-{i:03d}", "mac": mac(i), "image_id": image["id"]}
                        resp = client.post("/api/v1/machines", json=body)
                        assert resp.status_code == 201 and resp.json()["status"] == "READY", (
                            resp.text
                        )
                tftp = write_tftp(Path(tmp) / "tftp", server.port)
                logs = Path(tmp) / "logs"
                logs.mkdir()
                single, group = [], []
                for _ in range(args.rounds):
                    single.append(boot_all(tftp, logs, [mac(0)])[0])
                    group.append(max(boot_all(tftp, logs, [mac(i) for i in range(PARALLEL)])))
                with timer() as remove:
                    for m in client.get("/api/v1/machines", params={"limit": 1000}).json()["items"]:
                        assert client.delete(f"/api/v1/machines/{m['id']}").status_code == 204
        finally:
            server.stop()
            cleanup_layers(data / "writebacks")
            if tgtd_pid(control_port) is not None:
                kill_tgtd(control_port)

    one = statistics.median(single)
    four = statistics.median(group)
    table = Table(
        ["what", "seconds", "vs single boot"],
        title=f"diskless boot ({args.rounds} rounds, medians; QEMU TCG, 16 MiB golden image)",
    )
    n = args.machines
    table.add(
        f"provision {n} machines (API, sequential)",
        provision.seconds,
        ratio(provision.seconds, one),
    )
    table.add(
        "  per machine (overlay + QSD + FUSE + target)",
        provision.seconds / n,
        ratio(provision.seconds / n, one),
    )
    table.add("boot 1 machine to the marker", one, "1.00x")
    table.add(f"boot {PARALLEL} machines at once, until all show it", four, ratio(four, one))
    table.add(f"delete {n} machines (API)", remove.seconds, ratio(remove.seconds, one))
    table.print()


if __name__ == "__main__":
    main()
