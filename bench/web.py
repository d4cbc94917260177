#!/usr/bin/env python3
"""Web console: server time per main page and bytes at first load, on a seeded catalogue.

Seeds (straight into the DB) 1,000 images, 100 machines and 10,000 restore points
(50 sources x 200 points, chains of 20), signs in through the login form, then
requests each page ``--rounds`` times in-process and prints p50/p95 of the time
the app takes, the page's compressed bytes plus its static files (first load,
empty cache), and the ratio against the JSON API call that lists the same
thing (the baseline) and against the goals (p95 < 150 ms, < 250 KB).

Usage: .venv/bin/python bench/web.py [--rounds 30] [--database-url URL]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _common import Table, fmt_bytes, ratio
from fastapi.testclient import TestClient
from sqlalchemy import insert

from diskvault.api.app import create_app
from diskvault.backups.models import (
    Backup,
    BackupChain,
    BackupRepository,
    BackupSource,
    BackupStatus,
    BackupType,
    RepositoryKind,
    SourceKind,
)
from diskvault.boot.models import Machine, MachineMode, MachineStatus
from diskvault.config import Settings, load_settings
from diskvault.db.engine import session_scope
from diskvault.images.models import Image, ImageStatus, ImageType
from diskvault.logging import configure

PASSWORD = "bench-password-123"
GOAL_P95_S, GOAL_BYTES = 0.150, 250 * 1024
SOURCES, POINTS, CHAIN = 50, 200, 20
ASSETS = re.compile(r'(?:src|href)="(/static/[^"]+)"')


def _id(prefix: str, n: int) -> str:
    return f"{prefix}{n:0{32 - len(prefix)}d}"


def seed(settings: Settings) -> None:
    now = datetime.now(UTC)
    with session_scope(settings.DATABASE_URL) as s:
        s.execute(
            insert(Image),
            [
                {
                    "id": _id("img", i),
                    "name": f"image-{i:04d}",
                    "image_type": ImageType.system,
                    "status": ImageStatus.READY,
                    "format": "qcow2",
                    "virtual_size": 20 * 1024**3,
                    "file_size": (i + 1) * 10 * 1024**2,
                    "details": {},
                    "created_at": now - timedelta(minutes=i),
                    "updated_at": now,
                }
                for i in range(1000)
            ],
        )
        s.execute(
            insert(Machine),
            [
                {
                    "id": _id("mac", i),
                    "name": f"pc-{i:03d}",
                    "mac": f"52:54:00:00:{i // 256:02x}:{i % 256:02x}",
                    "image_id": _id("img", i % 10),
                    "mode": MachineMode.discard,
                    "initiator_iqn": f"iqn.2024-01.bench:pc-{i:03d}",
                    "status": MachineStatus.READY,
                    "node": settings.NODE,
                    "layer_version": 1,
                    "reset_pending": False,
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(100)
            ],
        )
        repo = BackupRepository(name="default", kind=RepositoryKind.local, path="/nonexistent")
        s.add(repo)
        s.flush()
        sources, chains, points = [], [], []
        for v in range(SOURCES):
            name = f"vm-{v:02d}"
            sources.append(
                {
                    "id": _id("src", v),
                    "name": name,
                    "kind": SourceKind.qcow2,
                    "config": {"path": f"/vm/{name}.qcow2"},
                    "created_at": now,
                    "updated_at": now,
                }
            )
            for c in range(POINTS // CHAIN):
                chain_id = _id(f"ch{v:02d}-", c)
                chains.append(
                    {
                        "id": chain_id,
                        "repository_id": repo.id,
                        "vm_name": name,
                        "disk_index": 0,
                        "created_at": now,
                        "updated_at": now,
                    }
                )
                parent = None
                for p in range(CHAIN):
                    n = c * CHAIN + p
                    pid = _id(f"bk{v:02d}-", n)
                    points.append(
                        {
                            "id": pid,
                            "vm_name": name,
                            "disk_index": 0,
                            "repository_id": repo.id,
                            "chain_id": chain_id,
                            "requested_type": "auto",
                            "backup_type": BackupType.full if p == 0 else BackupType.incremental,
                            "status": BackupStatus.completed,
                            "path": f"{name}/{pid}.qcow2",
                            "parent_backup_id": parent,
                            "file_size": (5 if p == 0 else 1) * 1024**3,
                            "created_at": now - timedelta(hours=POINTS - n),
                        }
                    )
                    parent = pid
        s.execute(insert(BackupSource), sources)
        s.execute(insert(BackupChain), chains)
        s.execute(insert(Backup), points)


def sign_in(client: TestClient) -> None:
    page = client.get("/login").text
    nonce = re.search(r'name="csrf" value="([^"]+)"', page)
    assert nonce
    data = {"username": "admin", "password": PASSWORD, "csrf": nonce.group(1), "next": "/"}
    resp = client.post("/login", data=data, follow_redirects=False)
    assert resp.status_code == 303, resp.text


def measure(client: TestClient, url: str, rounds: int, **kw: object) -> tuple[float, float, int]:
    times, size = [], 0
    for _ in range(rounds):
        start = time.perf_counter()
        resp = client.get(url, **kw)  # type: ignore[arg-type]
        times.append(time.perf_counter() - start)
        assert resp.status_code == 200, (url, resp.status_code, resp.text[:300])
        size = resp.num_bytes_downloaded
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * len(times)) - 1)]
    return statistics.median(times), p95, size


def first_load_bytes(client: TestClient, url: str) -> int:
    page = client.get(url)
    total = page.num_bytes_downloaded
    for asset in sorted(set(ASSETS.findall(page.text))):
        total += client.get(asset).num_bytes_downloaded
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    configure("WARNING", "console")
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        extra = {"DATABASE_URL": args.database_url} if args.database_url else {}
        settings = load_settings(
            DATA_DIR=Path(tmp), WORKERS=0, ADMIN_PASSWORD=PASSWORD, LOG_LEVEL="WARNING", **extra
        )
        with TestClient(create_app(settings)) as client:
            seeded = time.perf_counter()
            seed(settings)
            print(
                f"seeded 1000 images, 100 machines, {SOURCES * POINTS} restore points "
                f"in {time.perf_counter() - seeded:.1f} s ({settings.DATABASE_URL.split(':')[0]})"
            )
            token = client.post(
                "/api/v1/auth/login", json={"username": "admin", "password": PASSWORD}
            ).json()["access_token"]
            bearer = {"headers": {"Authorization": f"Bearer {token}"}}
            sign_in(client)
            pages = [
                ("dashboard", "/", "/api/v1/status"),
                ("images", "/images", "/api/v1/images"),
                ("images sorted+filtered", "/images?sort=-size&q=image-09", "/api/v1/images"),
                ("image detail", f"/images/{_id('img', 5)}", f"/api/v1/images/{_id('img', 5)}"),
                ("jobs", "/jobs", "/api/v1/jobs"),
                ("backups", "/backups", "/api/v1/sources"),
                ("source (200 points)", "/backups/vm-07", "/api/v1/backup/chain?vm_name=vm-07"),
                ("machines", "/machines", "/api/v1/machines"),
                ("targets", "/targets", "/api/v1/targets"),
                ("file restore", "/restore", "/api/v1/restore"),
                ("organizer", "/organizer", "/api/v1/operations"),
                ("admin", "/admin", "/api/v1/audit"),
            ]
            table = Table(
                [
                    "page",
                    "p50 ms",
                    "p95 ms",
                    "API p95 ms",
                    "p95/API",
                    "p95/goal",
                    "first load",
                    "bytes/goal",
                ],
                title=f"web console, {args.rounds} rounds per page (goal p95 < 150 ms, < 250 KB)",
            )
            for name, url, api in pages:
                p50, p95, _ = measure(client, url, args.rounds)
                api_p95 = measure(client, api, args.rounds, **bearer)[1]
                size = first_load_bytes(client, url)
                table.add(
                    name,
                    f"{p50 * 1000:.1f}",
                    f"{p95 * 1000:.1f}",
                    f"{api_p95 * 1000:.1f}",
                    ratio(p95, api_p95),
                    ratio(p95, GOAL_P95_S),
                    fmt_bytes(size),
                    ratio(size, GOAL_BYTES),
                )
            table.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
