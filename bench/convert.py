#!/usr/bin/env python3
"""Image conversion: bare qemu-img vs ``diskvault image convert --local`` vs the server path.

Builds a VHDX (default 4 GiB) in which half of the 1 MiB clusters, picked at
random, hold random data, then times, in one run and each with the VHDX's
pages evicted from the page cache so that every tool reads it from the disk
(``--cold all`` drops every cache instead, programs and libraries included,
which mostly measures how long Python takes to load from a cold disk):

1. baseline: ``qemu-img convert -f vhdx -O raw`` with qemu-img's defaults;
2. ``diskvault image convert SRC DST --to raw --local`` (the CLI process,
   startup included: inspection, qemu-img info, space check, convert with
   ``-m 8 -W``, fsync, rename); for comparison also with ``--no-sync`` (no
   fsync, as the baseline), and the baseline followed by ``sync -f``;
3. the server path: a real ``diskvault serve``; a streamed upload (SHA-256
   while streaming, header inspection), then the job (qemu-img info under
   prlimit, convert, SHA-256 of the output, publish) until READY. Twice: with
   ``diskvault image upload`` (the sparse stream: only the file's data travels)
   and with ``curl -F file=@...`` (multipart: every byte of the file travels).

Prints the ratios baseline/diskvault (goals: local >= 1.0x, server >= 0.6x),
the server path's stages, and the server's peak RSS while it uploads and converts.

4. the huge-sparse rows (issue 13, finding 5): a qcow2 and a VHDX declaring 4 TiB
   that hold 1 MiB of data, uploaded both ways until READY, with the server's CPU seconds
   (utime + stime of ``serve`` and its reaped children, from /proc/<pid>/stat)
   against bare ``qemu-img convert`` of the same file. Goal: seconds, and under
   5 s of server CPU: cost follows the data, not the virtual size.

Usage: .venv/bin/python bench/convert.py [--size-gib 4] [--runs 3] [--cold data|all]
       .venv/bin/python bench/convert.py --rows huge     # only row 4
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from _common import Table, drop_caches, evict, fmt_bytes, ratio, run, timer

MiB = 1024 * 1024
BIN = Path(sys.executable).parent / "diskvault"
PASSWORD = "bench-admin-password"


def build_vhdx(workdir: Path, size: int) -> Path:
    raw = workdir / "src.raw"
    vhdx = workdir / f"src-{size // MiB}M.vhdx"
    if vhdx.exists():
        return vhdx
    rng = random.Random(4)
    with open(raw, "wb") as fh:
        fh.truncate(size)
        for cluster in range(size // MiB):
            if rng.random() < 0.5:
                fh.seek(cluster * MiB)
                fh.write(os.urandom(MiB))
    run(["qemu-img", "convert", "-f", "raw", "-O", "vhdx", raw, vhdx])
    raw.unlink()
    return vhdx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "DISKVAULT_DATA_DIR": str(data_dir),
            "DISKVAULT_PORT": str(self.port),
            "DISKVAULT_ADMIN_PASSWORD": PASSWORD,
            "DISKVAULT_LOG_LEVEL": "WARNING",
            "DISKVAULT_LOG_FORMAT": "json",
        }
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log = open(data_dir / "server.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(BIN), "serve"], env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise SystemExit("diskvault serve did not start")
        login = {"username": "admin", "password": PASSWORD}
        token = httpx.post(self.url + "/api/v1/auth/login", json=login).json()["access_token"]
        self.token = token
        self.client = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=600
        )

    def rss(self, field: str = "VmRSS") -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        return 0

    def cpu_seconds(self) -> float:
        """utime + stime of serve and of the children it has reaped (qemu-img)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.client.close()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        self.log.close()


def _ready(server: Server, image_id: str) -> dict[str, Any]:
    while True:
        image: dict[str, Any] = server.client.get(f"/api/v1/images/{image_id}").json()
        if image["status"] in ("READY", "ERROR"):
            break
        time.sleep(0.02)
    if image["status"] != "READY" or image["format"] != "raw" or not image["digest"]:
        raise SystemExit(f"server path failed: {image}")
    return image


def _stages(server: Server, image: dict[str, Any]) -> dict[str, float]:
    while (job := server.client.get(f"/api/v1/jobs/{image['job_id']}").json())["result"] is None:
        time.sleep(0.01)  # READY is recorded just before the job's own end
    uploaded = datetime.fromisoformat(job["created_at"]) - datetime.fromisoformat(
        image["created_at"]
    )
    result = job["result"]
    deleted = server.client.delete(f"/api/v1/images/{image['id']}")
    if deleted.status_code != 204:
        print(f"warning: image {image['id']} not deleted: {deleted.text}", file=sys.stderr)
    return {
        "upload (stream, SHA-256, header inspection)": uploaded.total_seconds(),
        "job: convert in 512 MiB segments, each hashed while the next converts": result[
            "convert_s"
        ],
    }


def server_path(server: Server, vhdx: Path, client: str) -> tuple[float, dict[str, float], int]:
    """(seconds to READY, the stages' seconds, peak server RSS) with one of two clients.

    ``cli``: ``diskvault image upload FILE`` (the sparse stream: only data travels);
    ``curl``: ``curl -F file=@FILE`` (multipart: every byte of the file travels).
    """
    peak = [0]
    done = threading.Event()

    def sample() -> None:  # VmRSS every 20 ms: the upload's own footprint, not start-up's
        while not done.wait(0.02):
            peak[0] = max(peak[0], server.rss())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    url = f"{server.url}/api/v1/images/upload"
    with timer() as total:
        if client == "cli":
            env = {**os.environ, "DISKVAULT_URL": server.url, "DISKVAULT_TOKEN": server.token}
            cmd = [str(BIN), "image", "upload", str(vhdx), "--name", "bench"]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
            image_id = re.search(r"image ([0-9a-f-]{32,36})", out)
            if image_id is None:
                raise SystemExit(f"no image id in: {out}")
            image = _ready(server, image_id[1])
        else:
            auth = f"Authorization: Bearer {server.token}"
            cmd = ["curl", "-sSf", "-H", auth, "-F", "name=bench", "-F", f"file=@{vhdx}", url]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            image = _ready(server, json.loads(out)["id"])
    done.set()
    sampler.join()
    return total.seconds, _stages(server, image), peak[0]


HUGE = 4 * 1024**4  # the default MAX_VIRTUAL_SIZE


def build_huge(workdir: Path, fmt: str) -> Path:
    """An image declaring 4 TiB with 1 MiB of data in the middle."""
    path = workdir / f"huge-4T-1M.{fmt}"
    if not path.exists():
        run(["qemu-img", "create", "-q", "-f", fmt, path, str(HUGE)])
        run(["qemu-io", "-f", fmt, "-c", f"write -P 0x5a {HUGE // 2} 1M", path])
    return path


def huge_rows(workdir: Path) -> None:
    table = Table(
        ["path", "seconds", "CPU s", "CPU baseline/this", "goal"],
        title=f"bench/convert.py: images of {fmt_bytes(HUGE)} virtual holding 1 MiB, to raw",
    )
    server = Server(workdir / "server-huge")
    try:
        for fmt in ("qcow2", "vhdx"):
            src = build_huge(workdir, fmt)
            out = workdir / "huge.raw"
            before = os.times()
            with timer() as t:
                run(["qemu-img", "convert", "-f", fmt, "-O", "raw", src, out])
            after = os.times()
            base_cpu = after.children_user + after.children_system
            base_cpu -= before.children_user + before.children_system
            out.unlink()
            size = fmt_bytes(src.stat().st_size)
            table.add(
                f"{fmt} ({size}): qemu-img convert -O raw (baseline)",
                t.seconds,
                base_cpu,
                "1.00x",
                "",
            )
            for client, label in (("cli", "diskvault image upload"), ("curl", "curl -F")):
                cpu = server.cpu_seconds()
                seconds, _, _ = server_path(server, src, client)
                used = server.cpu_seconds() - cpu
                row = f"{fmt}: server path, {label}, to READY"
                table.add(row, seconds, used, ratio(base_cpu, used), "seconds, < 5 s CPU")
    finally:
        server.stop()
        shutil.rmtree(workdir / "server-huge", ignore_errors=True)
    table.print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", choices=["all", "huge"], default="all")
    parser.add_argument("--size-gib", type=float, default=4)
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp/dv-bench-convert"))
    parser.add_argument("--runs", type=int, default=1, help="repeat and keep the best of each")
    parser.add_argument(
        "--cold",
        choices=["data", "all"],
        default="data",
        help="evict the image from the page cache (data) or drop every cache (all)",
    )
    args = parser.parse_args()
    size = int(args.size_gib * 1024) * MiB
    args.dir.mkdir(parents=True, exist_ok=True)
    huge_rows(args.dir)
    if args.rows == "huge":
        return
    vhdx = build_vhdx(args.dir, size)
    out = args.dir / "out.raw"
    server = Server(args.dir / "server")
    idle_rss, startup_peak = server.rss(), server.rss("VmHWM")
    best = {
        "baseline": float("inf"),
        "local": float("inf"),
        "local-nosync": float("inf"),
        "baseline+sync": float("inf"),
        "cli": float("inf"),
        "curl": float("inf"),
    }
    stages: dict[str, dict[str, float]] = {}
    rss = 0

    def cold() -> None:
        if args.cold == "all":
            drop_caches()
        else:
            evict(vhdx)

    try:
        for _ in range(args.runs):
            cold()
            with timer() as t:
                run(["qemu-img", "convert", "-f", "vhdx", "-O", "raw", vhdx, out])
            best["baseline"] = min(best["baseline"], t.seconds)
            out.unlink()
            cold()
            with timer() as t:
                run([BIN, "image", "convert", vhdx, out, "--to", "raw", "--local"])
            best["local"] = min(best["local"], t.seconds)
            out.unlink()
            cold()
            with timer() as t:
                run([BIN, "image", "convert", vhdx, out, "--to", "raw", "--local", "--no-sync"])
            best["local-nosync"] = min(best["local-nosync"], t.seconds)
            out.unlink()
            cold()
            with timer() as t:
                run(["qemu-img", "convert", "-f", "vhdx", "-O", "raw", vhdx, out])
                run(["sync", "-f", out])
            best["baseline+sync"] = min(best["baseline+sync"], t.seconds)
            out.unlink()
            for client in ("cli", "curl"):
                cold()
                seconds, run_stages, peak = server_path(server, vhdx, client)
                if seconds < best[client]:
                    best[client], stages[client] = seconds, run_stages
                rss = max(rss, peak)
    finally:
        server.stop()
        shutil.rmtree(args.dir / "server", ignore_errors=True)
    base = best["baseline"]
    table = Table(
        ["path", "seconds", "baseline/this", "goal"],
        title=f"bench/convert.py: {fmt_bytes(size)} VHDX, 50% random 1 MiB clusters, "
        f"to raw, cold {'cache' if args.cold == 'all' else 'image'}, best of {args.runs}",
    )
    table.add("qemu-img convert -f vhdx -O raw (baseline)", base, "1.00x", "")
    table.add(
        "diskvault image convert --local", best["local"], ratio(base, best["local"]), ">= 1.0x"
    )
    table.add(
        "  the same, --no-sync (no flush, like the baseline)",
        best["local-nosync"],
        ratio(base, best["local-nosync"]),
        "",
    )
    table.add(
        "  qemu-img convert + sync -f (the baseline, flushed)",
        best["baseline+sync"],
        ratio(base, best["baseline+sync"]),
        "",
    )
    labels = {
        "cli": "server path, diskvault image upload (sparse stream) to READY",
        "curl": "server path, curl -F (multipart, every byte) to READY",
    }
    for client, label in labels.items():
        table.add(label, best[client], ratio(base, best[client]), ">= 0.6x")
        for stage, stage_s in stages[client].items():
            table.add(f"  of which {stage}", stage_s, "", "")
    table.print()
    print(
        f"server RSS: idle {fmt_bytes(idle_rss)}, peak while uploading and converting "
        f"{fmt_bytes(rss)} (goal: under 200 MB); start-up peak (VmHWM) {fmt_bytes(startup_peak)}"
    )


if __name__ == "__main__":
    main()
