"""iSCSI serving: sequential read through a target against reading the file, and API churn.

Starts a real ``diskvault serve`` that manages its own tgtd (private control
port, free 127.0.0.1 portal), creates a target for a 2 GiB raw file through
the API, then reads the whole disk with ``qemu-img bench`` (sequential 1 MiB
reads, queue depth 8) twice per round: once from the file, once through the
target over loopback iSCSI (libiscsi in qemu-img, tgtd on the other side).
The page cache is dropped before every read, so both start from the disk.
The same client is used for both, so the ratio is the cost of the iSCSI hop.

Then it times creating and deleting 50 targets through the API.

    sudo .venv/bin/python bench/iscsi.py                  # 2 GiB, 3 rounds, 50 targets
    sudo .venv/bin/python bench/iscsi.py --size-mib 256 --rounds 1 --targets 10
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
from pathlib import Path

from _common import Table, drop_caches, fmt_bytes, ratio, run, timer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.iscsi import image_opts  # noqa: E402
from support.server import ServerProcess  # noqa: E402
from support.targets_tgtd import (  # noqa: E402
    INITIATOR,
    free_control_port,
    free_tcp_port,
    kill_tgtd,
    tgtd_pid,
)

MiB = 1024 * 1024
REQUEST = MiB
DEPTH = 8


def write_disk(path: Path, size: int) -> None:
    """Non-zero, incompressible-ish data: a random 1 MiB block repeated, written in place."""
    block = memoryview(random.Random(2048).randbytes(MiB))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for _ in range(size // MiB):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())


def bench_read(source: list[str], count: int) -> float:
    drop_caches()
    cmd = ["qemu-img", "bench", "-c", str(count), "-s", str(REQUEST), "-d", str(DEPTH)]
    with timer() as t:
        run([*cmd, *source], timeout=1800)
    return t.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--targets", type=int, default=50)
    args = parser.parse_args()
    size = args.size_mib * MiB
    count = size // REQUEST

    control_port = free_control_port()
    portal = f"127.0.0.1:{free_tcp_port()}"
    with tempfile.TemporaryDirectory(prefix="dv-bench-iscsi-") as tmp:
        server = ServerProcess(
            Path(tmp) / "server",
            env={
                "DISKVAULT_TGT_MANAGE": "1",
                "DISKVAULT_TGT_CONTROL_PORT": str(control_port),
                "DISKVAULT_ISCSI_PORTAL": portal,
                "DISKVAULT_LOG_LEVEL": "WARNING",
            },
        )
        disk = server.data_dir / "writebacks" / "bench.raw"
        write_disk(disk, size)
        server.start()
        try:
            with server.client(server.login()) as client:
                resp = client.post("/api/v1/targets", json={"path": str(disk), "name": "bench"})
                resp.raise_for_status()
                iqn = resp.json()["iqn"]
                remote = ["--image-opts", image_opts(portal, iqn, 1, INITIATOR)]
                local = ["-f", "raw", str(disk)]
                file_s, iscsi_s = [], []
                for _ in range(args.rounds):
                    file_s.append(bench_read(local, count))
                    iscsi_s.append(bench_read(remote, count))
                client.delete(f"/api/v1/targets/{resp.json()['id']}").raise_for_status()

                create_s, delete_s = [], []
                ids = []
                for i in range(args.targets):
                    with timer() as t:
                        made = client.post(
                            "/api/v1/targets", json={"path": str(disk), "name": f"churn-{i}"}
                        )
                    made.raise_for_status()
                    create_s.append(t.seconds)
                    ids.append(made.json()["id"])
                for target_id in ids:
                    with timer() as t:
                        client.delete(f"/api/v1/targets/{target_id}").raise_for_status()
                    delete_s.append(t.seconds)
        finally:
            server.stop()
            if tgtd_pid(control_port) is not None:
                kill_tgtd(control_port)

    f, i = statistics.median(file_s), statistics.median(iscsi_s)
    read = Table(
        ["read path", "size", "median s", "MiB/s", "time vs file"],
        title=f"sequential read, qemu-img bench -s 1M -d {DEPTH}, caches dropped, "
        f"median of {args.rounds}",
    )
    read.add("file (raw)", fmt_bytes(size), f, f"{size / MiB / f:.0f}", "1.00x")
    read.add("iSCSI via tgtd (loopback)", fmt_bytes(size), i, f"{size / MiB / i:.0f}", ratio(i, f))
    read.print()
    print()
    churn = Table(["API operation", "targets", "total s", "mean ms per target"])
    churn.add(
        "POST /api/v1/targets",
        args.targets,
        sum(create_s),
        f"{1000 * statistics.mean(create_s):.1f}",
    )
    churn.add(
        "DELETE /api/v1/targets/{id}",
        args.targets,
        sum(delete_s),
        f"{1000 * statistics.mean(delete_s):.1f}",
    )
    churn.print()


if __name__ == "__main__":
    main()
