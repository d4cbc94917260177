#!/usr/bin/env python3
"""Image conversion: bare qemu-img vs ``diskvault image convert --local`` vs the server path.

Builds a VHDX (default 4 GiB) in which half of the 1 MiB clusters, picked at
random, hold random data, then times, in one run and each from a cold page
cache (``drop_caches``):

1. baseline: ``qemu-img convert -f vhdx -O raw`` with qemu-img's defaults;
2. ``diskvault image convert SRC DST --to raw --local`` (the CLI process,
   startup included: inspection, qemu-img info, space check, convert with
   ``-m 8 -W``, fsync, rename);
3. the server path: a real ``diskvault serve``; streamed multipart upload
   (SHA-256 while streaming, header inspection), then the job (qemu-img info
   under prlimit, convert, SHA-256 of the output, publish) until READY.

Prints the ratios baseline/diskvault (goals: local >= 1.0x, server >= 0.6x),
the server path's stages, and the server's peak RSS while it uploads and converts.

Usage: .venv/bin/python bench/convert.py [--size-gib 4] [--dir /var/tmp/dv-bench-convert]
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from _common import Table, drop_caches, fmt_bytes, ratio, run, timer

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

    def stop(self) -> None:
        self.client.close()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        self.log.close()


def multipart(path: Path) -> tuple[str, int, Iterator[bytes]]:
    boundary = f"bench-{secrets.token_hex(8)}"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\nbench\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def body() -> Iterator[bytes]:
        yield head
        with open(path, "rb") as fh:
            while chunk := fh.read(4 * MiB):
                yield chunk
        yield tail

    return boundary, len(head) + path.stat().st_size + len(tail), body()


def server_path(server: Server, vhdx: Path) -> tuple[float, dict[str, float], int]:
    """(seconds to READY, the stages' seconds, peak server RSS)."""
    boundary, length, body = multipart(vhdx)
    headers = {
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Content-Length": str(length),
    }
    peak = [0]
    done = threading.Event()

    def sample() -> None:  # VmRSS every 20 ms: the upload's own footprint, not start-up's
        while not done.wait(0.02):
            peak[0] = max(peak[0], server.rss())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with timer() as total:
        with timer() as up:
            resp = server.client.post("/api/v1/images/upload", content=body, headers=headers)
        resp.raise_for_status()
        image_id, job_id = resp.json()["id"], resp.json()["job_id"]
        while True:
            image = server.client.get(f"/api/v1/images/{image_id}").json()
            if image["status"] in ("READY", "ERROR"):
                break
            time.sleep(0.02)
    if image["status"] != "READY" or image["format"] != "raw" or not image["sha256"]:
        raise SystemExit(f"server path failed: {image}")
    done.set()
    sampler.join()
    while (job := server.client.get(f"/api/v1/jobs/{job_id}").json())["result"] is None:
        time.sleep(0.01)  # READY is recorded just before the job's own end
    result = job["result"]
    stages = {
        "upload request (stream, SHA-256, header inspection)": up.seconds,
        "qemu-img convert -m 8 -W (in the job)": result["convert_s"],
        "SHA-256 of the converted image (in the job)": result["checksum_s"],
    }
    deleted = server.client.delete(f"/api/v1/images/{image_id}")
    if deleted.status_code != 204:
        print(f"warning: image {image_id} not deleted: {deleted.text}", file=sys.stderr)
    return total.seconds, stages, peak[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=float, default=4)
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp/dv-bench-convert"))
    parser.add_argument("--runs", type=int, default=1, help="repeat and keep the best of each")
    args = parser.parse_args()
    size = int(args.size_gib * 1024) * MiB
    args.dir.mkdir(parents=True, exist_ok=True)
    vhdx = build_vhdx(args.dir, size)
    out = args.dir / "out.raw"
    server = Server(args.dir / "server")
    idle_rss, startup_peak = server.rss(), server.rss("VmHWM")
    best = {"baseline": float("inf"), "local": float("inf"), "server": float("inf")}
    stages: dict[str, float] = {}
    rss = 0
    try:
        for _ in range(args.runs):
            drop_caches()
            with timer() as t:
                run(["qemu-img", "convert", "-f", "vhdx", "-O", "raw", vhdx, out])
            best["baseline"] = min(best["baseline"], t.seconds)
            out.unlink()
            drop_caches()
            with timer() as t:
                run([BIN, "image", "convert", vhdx, out, "--to", "raw", "--local"])
            best["local"] = min(best["local"], t.seconds)
            out.unlink()
            drop_caches()
            seconds, run_stages, peak = server_path(server, vhdx)
            if seconds < best["server"]:
                best["server"], stages = seconds, run_stages
            rss = max(rss, peak)
    finally:
        server.stop()
        shutil.rmtree(args.dir / "server", ignore_errors=True)
    base = best["baseline"]
    table = Table(
        ["path", "seconds", "baseline/this", "goal"],
        title=f"bench/convert.py: {fmt_bytes(size)} VHDX, 50% random 1 MiB clusters, "
        f"to raw, cold cache, best of {args.runs}",
    )
    table.add("qemu-img convert -f vhdx -O raw (baseline)", base, "1.00x", "")
    table.add(
        "diskvault image convert --local", best["local"], ratio(base, best["local"]), ">= 1.0x"
    )
    table.add(
        "server: upload + checksum + inspect + convert to READY",
        best["server"],
        ratio(base, best["server"]),
        ">= 0.6x",
    )
    for stage, stage_s in stages.items():
        table.add(f"  of which {stage}", stage_s, "", "")
    table.print()
    print(
        f"server RSS: idle {fmt_bytes(idle_rss)}, peak while uploading and converting "
        f"{fmt_bytes(rss)} (goal: under 200 MB); start-up peak (VmHWM) {fmt_bytes(startup_peak)}"
    )


if __name__ == "__main__":
    main()
