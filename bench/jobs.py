#!/usr/bin/env python3
"""Job system: enqueue-to-start latency and no-op throughput, embedded vs Redis.

Runs the real job stack in-process (DB, Huey queue, 2 worker threads, runner)
for each mode in one run and prints a table:

- latency: ``--latency-jobs`` jobs submitted one at a time on an idle queue;
  started_at - created_at, p50 and p99.
- throughput: ``--jobs`` no-op jobs submitted back to back while the workers
  run; jobs / (last finished - first created).

Usage: .venv/bin/python bench/jobs.py [--jobs 1000] [--latency-jobs 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis
from _common import Table
from sqlalchemy import func, select

from diskvault.config import Settings, load_settings
from diskvault.db.engine import session_scope
from diskvault.db.migrate import upgrade
from diskvault.jobs import service
from diskvault.jobs.models import Job, JobStatus
from diskvault.jobs.worker import WorkerHost
from diskvault.logging import configure

REDIS_URL = "redis://127.0.0.1:6379/0"


def _wait_all(settings: Settings, n: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope(settings.DATABASE_URL) as s:
            done = s.scalar(
                select(func.count()).where(Job.status.in_([JobStatus.succeeded, JobStatus.failed]))
            )
        if done == n:
            return
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {n} jobs")


def measure(settings: Settings, n_latency: int, n_jobs: int) -> dict[str, float]:
    upgrade(settings.DATABASE_URL)
    host = WorkerHost(settings, workers=2)
    host.start()
    try:
        latencies = []
        for _ in range(n_latency):
            job = service.submit(settings, "noop")
            while True:
                with session_scope(settings.DATABASE_URL) as s:
                    row = s.get(Job, job.id)
                    assert row is not None
                    if row.started_at is not None:
                        latencies.append((row.started_at - row.created_at).total_seconds())
                        break
                time.sleep(0.001)
        _wait_all(settings, n_latency)
        t0 = time.perf_counter()
        for _ in range(n_jobs):
            service.submit(settings, "noop")
        submit_s = time.perf_counter() - t0
        _wait_all(settings, n_latency + n_jobs)
        with session_scope(settings.DATABASE_URL) as s:
            rows = s.execute(
                select(Job.created_at, Job.finished_at)
                .order_by(Job.created_at.desc())
                .limit(n_jobs)
            ).all()
        start = min(r[0] for r in rows)
        end = max(r[1] for r in rows)
        span = (end - start).total_seconds()
    finally:
        host.stop()
    latencies.sort()
    return {
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000,
        "throughput": n_jobs / span,
        "submit_rate": n_jobs / submit_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--latency-jobs", type=int, default=200)
    args = parser.parse_args()
    configure("WARNING", "console")
    results = {}
    with tempfile.TemporaryDirectory(prefix="dv-bench-jobs-") as tmp:
        results["embedded (SqliteHuey)"] = measure(
            load_settings(DATA_DIR=Path(tmp) / "embedded"), args.latency_jobs, args.jobs
        )
        try:
            redis.Redis.from_url(REDIS_URL, socket_timeout=3).ping()
        except redis.RedisError:
            print(f"Redis not reachable at {REDIS_URL}: Redis mode skipped", file=sys.stderr)
        else:
            name = f"dvbench-{uuid.uuid4().hex[:8]}"
            results["redis (RedisHuey)"] = measure(
                load_settings(DATA_DIR=Path(tmp) / "redis", QUEUE_URL=REDIS_URL, QUEUE_NAME=name),
                args.latency_jobs,
                args.jobs,
            )
            r = redis.Redis.from_url(REDIS_URL)
            for key in r.scan_iter(f"huey.*{name}*"):
                r.delete(key)
    base = results["embedded (SqliteHuey)"]
    table = Table(
        ["mode", "latency p50 ms", "latency p99 ms", "no-op jobs/s", "throughput vs embedded"],
        title=f"bench/jobs.py: {args.latency_jobs} latency probes, {args.jobs} no-op jobs, "
        "2 worker threads, SQLite job table",
    )
    for mode, r in results.items():
        table.add(
            mode,
            f"{r['p50_ms']:.1f}",
            f"{r['p99_ms']:.1f}",
            f"{r['throughput']:.0f}",
            f"{r['throughput'] / base['throughput']:.2f}x",
        )
    table.print()


if __name__ == "__main__":
    main()
