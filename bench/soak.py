#!/usr/bin/env python3
"""Soak: a real ``diskvault serve`` under steady mixed load, restarted once in the middle.

- ``--clients`` WebSocket watchers (50), each following running jobs one after another;
- ``--jobs`` jobs kept in flight (20): uploads converted qcow2 -> raw, organizer
  scans, and qcow2 backups (full, then incremental);
- authenticated GETs at ``--get-rate`` per second (job list, image list, job stats);
- one clean restart (SIGTERM, then start) half-way: interrupted jobs are requeued.

Prints the jobs by kind and outcome; GET latency p50/p99 (the goal: p99 < 200 ms);
the WebSocket gaps between messages while a job runs (the promise: 500 ms); and
the server's RSS, fds and threads, with loop devices, FUSE mounts, QSD processes
and tgt targets on the host, sampled at the start, the middle and the end (the goal:
back to the start values). Requests and gaps that span the restart are counted
apart. Everything binds 127.0.0.1 and stops by itself.

Usage: .venv/bin/python bench/soak.py [--minutes 10] [--clients 50] [--jobs 20]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from _common import Table, ratio
from websockets.sync.client import connect

from diskvault.tools import qemu_img

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support import qemu_io

MiB = 1024 * 1024
BIN = Path(sys.executable).parent / "diskvault"
PASSWORD = "soak-admin-password"
FINISHED = {"succeeded", "failed", "cancelled"}


class Server:
    def __init__(self, data: Path, env: dict[str, str]) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = data
        self.env = {
            **os.environ,
            "DISKVAULT_DATA_DIR": str(data),
            "DISKVAULT_PORT": str(self.port),
            "DISKVAULT_BIND_HOST": "127.0.0.1",
            "DISKVAULT_ADMIN_PASSWORD": PASSWORD,
            "DISKVAULT_LOG_FORMAT": "json",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.data / "server.log", "ab")  # noqa: SIM115 - the child's for its life
        self.proc = subprocess.Popen([str(BIN), "serve"], env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise SystemExit("the server did not start; see server.log")

    def stop(self) -> float:
        assert self.proc is not None
        began = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(120)
        return time.monotonic() - began

    def token(self) -> str:
        body = {"username": "admin", "password": PASSWORD}
        resp = httpx.post(self.url + "/api/v1/auth/login", json=body, timeout=30)
        resp.raise_for_status()
        return str(resp.json()["access_token"])


def _ours(pid: str, root: str) -> bool:
    try:
        return root in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def sample(server: Server) -> dict[str, int]:
    """The server's own resources, and the host resources under this run's folder.

    Other programs on the host (other test runs) are left out of the counts.
    """
    assert server.proc is not None
    pid = server.proc.pid
    root = str(server.data.parent)
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    qsds = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                comm = (entry / "comm").read_text().strip()
            except OSError:
                continue
            qsds += comm.startswith("qemu-storage") and _ours(entry.name, root)
    mounts = [m.split() for m in Path("/proc/mounts").read_text().splitlines()]
    loops = 0
    for dev in Path("/sys/block").glob("loop*"):
        with contextlib.suppress(OSError):
            loops += (dev / "loop" / "backing_file").read_text().startswith(root)
    targets = -1
    try:
        resp = httpx.get(
            server.url + "/api/v1/targets",
            headers={"Authorization": f"Bearer {server.token()}"},
            timeout=30,
        )
        targets = int(resp.json().get("total", -1))
    except (httpx.HTTPError, ValueError):
        pass
    return {
        "server RSS (KiB)": int(status["VmRSS"].split()[0]),
        "server fds": len(os.listdir(f"/proc/{pid}/fd")),
        "server threads": int(status["Threads"]),
        "loop devices": loops,
        "FUSE mounts": sum(1 for m in mounts if m[2].startswith("fuse") and m[1].startswith(root)),
        "QSD processes": qsds,
        "tgt targets (API)": targets,
    }


class Soak:
    GET_PATHS = ("/api/v1/jobs?limit=20", "/api/v1/images?limit=20", "/api/v1/jobs/stats")

    def __init__(self, server: Server, work: Path, args: argparse.Namespace) -> None:
        self.server = server
        self.work = work
        self.args = args
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.outstanding: dict[str, str] = {}  # job id -> kind
        self.outcomes: dict[str, dict[str, int]] = {}
        self.running: list[str] = []
        self.latencies: list[float] = []
        self.get_errors = 0
        self.gaps: list[float] = []
        self.ws_messages = 0
        self.restart_window: tuple[float, float] = (0.0, 0.0)
        self.restarting = threading.Event()
        self.token = server.token()
        self.counter = itertools.count()

    # -- setup -----------------------------------------------------------------
    def prepare(self, client: httpx.Client) -> None:
        qemu_img.create(self.work / "upload.qcow2", "qcow2", 16 * MiB)
        qemu_io.write_pattern(self.work / "upload.qcow2", "qcow2", 0, 8 * MiB, 0x5A)
        share = self.work / "share"
        for d in range(4):
            (share / f"dir{d}").mkdir(parents=True, exist_ok=True)
            for f in range(50):
                (share / f"dir{d}" / f"file{f}.txt").write_text(f"{d}-{f}\n" * (f + 1))
        for vm in range(self.args.vms):
            disk = self.work / f"vm{vm}.qcow2"
            qemu_img.create(disk, "qcow2", 16 * MiB)
            qemu_io.write_pattern(disk, "qcow2", 0, 4 * MiB, 0x10 + vm)
            body = {"name": f"vm{vm}", "kind": "qcow2", "path": str(disk)}
            resp = client.post("/api/v1/sources", json=body)
            if resp.status_code != 201:
                raise SystemExit(f"adding a source failed: {resp.status_code} {resp.text}")

    # -- jobs ------------------------------------------------------------------
    def submit(self, client: httpx.Client, kind: str) -> str:
        n = next(self.counter)
        if kind == "upload":
            with open(self.work / "upload.qcow2", "rb") as fh:
                resp = client.post(
                    "/api/v1/images/upload",
                    files={"file": ("upload.qcow2", fh, "application/octet-stream")},
                    data={"name": f"soak-{n}", "image_type": "system"},
                )
            return str(resp.raise_for_status().json()["job_id"])
        if kind == "scan":
            body = {"type": "scan", "location": (self.work / "share").as_uri()}
            return str(client.post("/api/v1/operations", json=body).raise_for_status().json()["id"])
        body = {"vm_name": f"vm{n % self.args.vms}", "speed": 4 * MiB}
        return str(client.post("/api/v1/backup/start", json=body).raise_for_status().json()["id"])

    def driver(self) -> None:
        kinds = itertools.cycle(["upload", "scan", "backup"])
        with httpx.Client(base_url=self.server.url, timeout=60) as client:
            client.headers["Authorization"] = f"Bearer {self.token}"
            while not self.stop.is_set():
                if self.restarting.is_set():
                    time.sleep(0.2)
                    continue
                try:
                    self._settle(client)
                    while len(self.outstanding) < self.args.jobs and not self.stop.is_set():
                        kind = next(kinds)
                        job_id = self.submit(client, kind)
                        with self.lock:
                            self.outstanding[job_id] = kind
                except httpx.HTTPError:
                    time.sleep(0.5)
                    continue
                time.sleep(0.2)

    def _settle(self, client: httpx.Client) -> None:
        running = []
        for job_id, kind in list(self.outstanding.items()):
            job = client.get(f"/api/v1/jobs/{job_id}").raise_for_status().json()
            if job["status"] in FINISHED:
                with self.lock:
                    del self.outstanding[job_id]
                    by_kind = self.outcomes.setdefault(kind, {})
                    by_kind[job["status"]] = by_kind.get(job["status"], 0) + 1
                if job["status"] != "succeeded":
                    print(f"{kind} {job_id} {job['status']}: {job['error']}", file=sys.stderr)
            elif job["status"] == "running":
                running.append(job_id)
        self.running = running

    def drain(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.server.url, timeout=60) as client:
            client.headers["Authorization"] = f"Bearer {self.token}"
            while self.outstanding and time.monotonic() < deadline:
                self._settle(client)
                time.sleep(0.5)

    # -- load ------------------------------------------------------------------
    def getter(self) -> None:
        paths = self.GET_PATHS
        interval = 1.0 / self.args.get_rate
        with httpx.Client(base_url=self.server.url, timeout=30) as client:
            client.headers["Authorization"] = f"Bearer {self.token}"
            for path in itertools.cycle(paths):
                if self.stop.is_set():
                    return
                began = time.monotonic()
                try:
                    ok = client.get(path).status_code == 200
                except httpx.HTTPError:
                    ok = False
                took = time.monotonic() - began
                if ok and not self._in_restart(began, began + took):
                    self.latencies.append(took)
                elif not ok and not self._in_restart(began, began + took):
                    self.get_errors += 1
                time.sleep(max(0.0, interval - took))

    def _in_restart(self, a: float, b: float) -> bool:
        lo, hi = self.restart_window
        return self.restarting.is_set() or (lo > 0 and a < hi and b > lo)

    def watcher(self, n: int) -> None:
        url = self.server.url.replace("http://", "ws://")
        while not self.stop.is_set():
            running = self.running
            if not running or self.restarting.is_set():
                time.sleep(0.1)
                continue
            job_id = running[n % len(running)]
            last: float | None = None
            try:
                with connect(f"{url}/ws/jobs/{job_id}?token={self.token}", open_timeout=10) as ws:
                    for raw in ws:
                        now = time.monotonic()
                        status = json.loads(raw).get("status")
                        self.ws_messages += 1
                        if last is not None and not self._in_restart(last, now):
                            self.gaps.append(now - last)
                        last = now if status == "running" else None
                        if self.stop.is_set():
                            break
            except Exception:  # a dropped socket (restart, closed job): take the next job
                time.sleep(0.2)

    def restart(self) -> float:
        self.restarting.set()
        began = time.monotonic()
        took = self.server.stop()
        self.server.start()
        self.token = self.server.token()
        self.restart_window = (began, time.monotonic())
        self.restarting.clear()
        return took


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--vms", type=int, default=6)
    parser.add_argument("--get-rate", type=float, default=10.0, help="GETs per second")
    parser.add_argument("--workers", type=int, default=6, help="DISKVAULT_WORKERS")
    parser.add_argument("--baseline-gets", type=int, default=200, help="GETs on the idle server")
    parser.add_argument("--settle", type=float, default=15.0, help="idle seconds before the end")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dv-soak-") as tmp:
        work = Path(tmp)
        (work / "data").mkdir()
        env = {
            "DISKVAULT_WORKERS": str(args.workers),
            "DISKVAULT_ORGANIZER_ROOTS": json.dumps([(work / "share").as_uri()]),
            "DISKVAULT_IMAGE_CONVERT_RATE_LIMIT": str(4 * MiB),
            "DISKVAULT_LOG_LEVEL": "WARNING",
        }
        server = Server(work / "data", env)
        server.start()
        soak = Soak(server, work, args)
        with httpx.Client(base_url=server.url, timeout=60) as client:
            client.headers["Authorization"] = f"Bearer {soak.token}"
            soak.prepare(client)
        samples = {"start": sample(server)}
        baseline = idle_gets(server, soak.token, args.baseline_gets)
        threads = [threading.Thread(target=soak.driver, daemon=True)]
        threads += [threading.Thread(target=soak.getter, daemon=True)]
        threads += [
            threading.Thread(target=soak.watcher, args=(n,), daemon=True)
            for n in range(args.clients)
        ]
        for t in threads:
            t.start()
        began = time.monotonic()
        seconds = args.minutes * 60
        time.sleep(seconds / 2)
        samples["middle"] = sample(server)
        stop_s = soak.restart()
        time.sleep(max(0.0, seconds / 2 - (time.monotonic() - began - seconds / 2)))
        soak.stop.set()
        for t in threads:
            t.join(30)
        soak.drain(300)
        time.sleep(args.settle)  # idle request threads retire, unmounts and exits settle
        samples["end"] = sample(server)
        server.stop()
        report(soak, samples, stop_s, time.monotonic() - began, baseline)
        if soak.outstanding:
            print(f"{len(soak.outstanding)} jobs never finished", file=sys.stderr)


def idle_gets(server: Server, token: str, n: int) -> list[float]:
    """The same GETs, one at a time, before any load: the baseline of this run."""
    paths = itertools.cycle(Soak.GET_PATHS)
    out = []
    with httpx.Client(base_url=server.url, timeout=30) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        for path in itertools.islice(paths, n):
            began = time.monotonic()
            client.get(path).raise_for_status()
            out.append(time.monotonic() - began)
    return out


def report(
    soak: Soak,
    samples: dict[str, dict[str, int]],
    stop_s: float,
    took: float,
    baseline: list[float],
) -> None:
    jobs = Table(["kind", "succeeded", "failed", "cancelled"], title=f"jobs ({took:.0f} s)")
    for kind, counts in sorted(soak.outcomes.items()):
        jobs.add(kind, *(counts.get(s, 0) for s in ("succeeded", "failed", "cancelled")))
    jobs.print()
    cols = ["GETs", "n", "errors", "p50 ms", "p99 ms", "max ms", "p99 vs idle", "goal p99"]
    gets = Table(cols, title="\nGETs")
    idle = [x * 1000 for x in baseline]
    for label, lat, errors in (
        ("idle server, one at a time", idle, 0),
        ("under load", [x * 1000 for x in soak.latencies], soak.get_errors),
    ):
        gets.add(
            label,
            len(lat),
            errors,
            f"{pct(lat, 0.5):.1f}",
            f"{pct(lat, 0.99):.1f}",
            f"{max(lat, default=float('nan')):.1f}",
            ratio(pct(lat, 0.99), pct(idle, 0.99)),
            "< 200 ms " + ("met" if pct(lat, 0.99) < 200 else "MISSED"),
        )
    gets.print()
    gaps = [g * 1000 for g in soak.gaps]
    ws = Table(["messages", "gaps", "p50 ms", "p99 ms", "max ms", "promise"], title="\nWebSocket")
    mean = statistics.mean(gaps) if gaps else float("nan")
    ws.add(
        soak.ws_messages,
        len(gaps),
        f"{pct(gaps, 0.5):.0f} (mean {mean:.0f})",
        f"{pct(gaps, 0.99):.0f}",
        f"{max(gaps, default=float('nan')):.0f}",
        "500 ms " + ("met" if max(gaps, default=0) <= 500 else "MISSED"),
    )
    ws.print()
    res = Table(["resource", "start", "middle", "end", "end/start"], title="\nresources")
    for key in samples["start"]:
        a, m, z = (samples[p][key] for p in ("start", "middle", "end"))
        res.add(key, a, m, z, f"{z / a:.2f}x" if a else ("same" if z == a else "changed"))
    res.print()
    print(f"\nclean stop of the loaded server took {stop_s:.1f} s (then restarted)")


if __name__ == "__main__":
    main()
