"""Login abuse: /health and an authenticated GET while 1,000 wrong passwords arrive.

Starts a real ``diskvault serve`` on 127.0.0.1, logs in once as admin, then
measures the latency of ``GET /health`` and ``GET /api/v1/auth/me`` (one after
the other, from one client) three times: idle (the baseline), during 1,000
bad logins for ``admin`` sent 100 at a time with the default throttling and,
with ``--unthrottled N``, during N bad logins with throttling turned off
(limits of 10^6), where every attempt costs an argon2 check and only the
bounded, low-priority hashing pool protects the rest (slow: minutes for 100).
The goal (issue 13, finding 6): p99 under 200 ms during the flood.

    .venv/bin/python bench/abuse.py
    .venv/bin/python bench/abuse.py --logins 500 --concurrency 50 --unthrottled 100
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from _common import Table, ratio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.server import ServerProcess  # noqa: E402

GOAL_P99_S = 0.200
PROBES = (("/health", False), ("/api/v1/auth/me", True))
NO_THROTTLE = {
    "DISKVAULT_LOGIN_MAX_FAILURES_PER_USER": "1000000",
    "DISKVAULT_LOGIN_MAX_FAILURES_PER_IP": "1000000",
}


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def probe(url: str, token: str, stop: threading.Event, count: int = 0) -> dict[str, list[float]]:
    """Time each probe in turn until ``stop`` is set (or ``count`` rounds are done)."""
    times: dict[str, list[float]] = collections.defaultdict(list)
    with httpx.Client(base_url=url, timeout=60) as client:
        rounds = 0
        while not stop.is_set() and (not count or rounds < count):
            for path, needs_token in PROBES:
                headers = {"Authorization": f"Bearer {token}"} if needs_token else {}
                start = time.perf_counter()
                resp = client.get(path, headers=headers)
                times[path].append(time.perf_counter() - start)
                resp.raise_for_status()
            rounds += 1
    return times


async def flood(url: str, logins: int, concurrency: int) -> collections.Counter[int]:
    statuses: collections.Counter[int] = collections.Counter()
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def one() -> None:
            resp = await client.post(
                "/api/v1/auth/login", json={"username": "admin", "password": "wrong-guess"}
            )
            statuses[resp.status_code] += 1

        for start in range(0, logins, concurrency):
            await asyncio.gather(*(one() for _ in range(min(concurrency, logins - start))))
    return statuses


def attack(
    srv: ServerProcess, token: str, logins: int, concurrency: int
) -> tuple[dict[str, list[float]], collections.Counter[int], float]:
    stop = threading.Event()
    result: dict[str, dict[str, list[float]]] = {}
    prober = threading.Thread(target=lambda: result.update(t=probe(srv.url, token, stop)))
    prober.start()
    start = time.perf_counter()
    try:
        statuses = asyncio.run(flood(srv.url, logins, concurrency))
    finally:
        elapsed = time.perf_counter() - start
        stop.set()
        prober.join()
    return result["t"], statuses, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logins", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--idle-rounds", type=int, default=200)
    parser.add_argument("--unthrottled", type=int, default=0, help="bad logins, no throttle")
    args = parser.parse_args()
    scenarios = [("idle", {}, 0), ("throttled", {}, args.logins)]
    if args.unthrottled:
        scenarios.append(("throttle off", NO_THROTTLE, args.unthrottled))

    table = Table(
        ["scenario", "endpoint", "samples", "p50 ms", "p99 ms", "p99 vs idle", "p99 < 200 ms"],
        title=f"bad logins, {args.concurrency} at a time, against diskvault serve",
    )
    floods = Table(["scenario", "logins", "seconds", "answers"], title="the flood itself")
    idle: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="dv-abuse-") as tmp:
        for name, env, logins in scenarios:
            srv = ServerProcess(Path(tmp) / name.replace(" ", "-"), env=env)
            srv.start()
            try:
                token = srv.login()
                if name == "idle":
                    times = probe(srv.url, token, threading.Event(), args.idle_rounds)
                else:
                    times, statuses, seconds = attack(srv, token, logins, args.concurrency)
                    answers = ", ".join(f"{n}x {code}" for code, n in sorted(statuses.items()))
                    floods.add(name, logins, seconds, answers)
            finally:
                srv.stop()
            for path, samples in times.items():
                p99 = percentile(samples, 0.99)
                idle.setdefault(path, p99)
                table.add(
                    name,
                    path,
                    len(samples),
                    f"{statistics.median(samples) * 1000:.1f}",
                    f"{p99 * 1000:.1f}",
                    ratio(p99, idle[path]),
                    "yes" if p99 < GOAL_P99_S else "NO",
                )
    table.print()
    print()
    floods.print()


if __name__ == "__main__":
    main()
