"""Console pages that change things, in-process: each goes through the domain's service."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select

from diskvault.backups import service
from diskvault.backups.models import (
    Backup,
    BackupChain,
    BackupPolicy,
    BackupRepository,
    BackupSource,
    BackupStatus,
    BackupType,
    RepositoryKind,
    SourceKind,
)
from diskvault.config import Settings
from diskvault.db.engine import session_scope
from diskvault.tools import qemu_img
from support.console import sign_in


def _source(settings: Settings, name: str) -> None:
    with session_scope(settings.DATABASE_URL) as s:
        s.add(BackupSource(name=name, kind=SourceKind.qcow2, config={"path": f"/vm/{name}.qcow2"}))


def test_policy_with_two_sources_shows_its_next_run(
    app_client: TestClient, settings: Settings
) -> None:
    _source(settings, "vm-a")
    _source(settings, "vm-b")
    csrf = sign_in(app_client)
    resp = app_client.post(
        "/backups/policies",
        data={
            "csrf": csrf,
            "name": "nightly",
            "sources": ["vm-a", "vm-b"],
            "schedule": "0 2 * * *",
            "keep_last": "7",
            "keep_daily": "",
        },
        follow_redirects=False,
    )
    assert resp.status_code == 303, resp.text
    assert "Policy nightly created." in app_client.get(resp.headers["location"]).text
    with session_scope(settings.DATABASE_URL) as s:
        policy = s.scalar(select(BackupPolicy).where(BackupPolicy.name == "nightly"))
        assert policy is not None
        assert policy.sources == ["vm-a", "vm-b"] and policy.retention == {"keep_last": 7}
    dashboard = app_client.get("/").text
    assert "nightly" in dashboard and "0 2 * * *" in dashboard


def test_bad_cron_comes_back_inline_and_creates_nothing(
    app_client: TestClient, settings: Settings
) -> None:
    _source(settings, "vm-a")
    csrf = sign_in(app_client)
    resp = app_client.post(
        "/backups/policies",
        data={"csrf": csrf, "name": "bad", "sources": "vm-a", "schedule": "every night"},
        headers={"referer": "http://testserver/backups"},
    )
    assert resp.status_code == 200 and resp.url.path == "/backups"
    assert "every night" in resp.text and "flash error" in resp.text
    with session_scope(settings.DATABASE_URL) as s:
        assert s.scalar(select(BackupPolicy)) is None


def test_prune_simulator_rejects_negative_counts(
    app_client: TestClient, settings: Settings
) -> None:
    _source(settings, "vm-a")
    sign_in(app_client)
    resp = app_client.get("/backups/vm-a?keep_last=-1")
    assert resp.status_code == 422 and "keep_last" in resp.text
    ok = app_client.get("/backups/vm-a?keep_last=2")
    assert ok.status_code == 200 and "Disk " not in ok.text  # no points: nothing to decide


def test_source_page_draws_every_chain_in_link_order(
    app_client: TestClient, settings: Settings
) -> None:
    _source(settings, "vm-a")
    now = datetime.now(UTC)
    with session_scope(settings.DATABASE_URL) as s:
        repo = BackupRepository(name="r", kind=RepositoryKind.local, path="/nonexistent")
        s.add(repo)
        s.flush()
        for c in range(2):
            chain = BackupChain(repository_id=repo.id, vm_name="vm-a", disk_index=0)
            s.add(chain)
            s.flush()
            parent = None
            for p in range(3):
                row = Backup(
                    vm_name="vm-a",
                    repository_id=repo.id,
                    chain_id=chain.id,
                    backup_type=BackupType.full if p == 0 else BackupType.incremental,
                    status=BackupStatus.completed,
                    parent_backup_id=parent,
                    file_size=1 + p,
                    created_at=now - timedelta(hours=10 * c + p),  # newer rows come first
                )
                s.add(row)
                s.flush()
                parent = row.id
    with session_scope(settings.DATABASE_URL) as s:
        view = service.chain_view(s, "vm-a", None)
    assert [[p["backup_type"] for p in c["points"]] for c in view["chains"]] == [
        ["full", "incremental", "incremental"]
    ] * 2
    sign_in(app_client)
    html = app_client.get("/backups/vm-a").text
    assert html.count('class="point"') == 6 and html.count('data-kind="full"') == 2


def test_sources_and_repositories_are_added_from_the_console(
    app_client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    csrf = sign_in(app_client)
    disk = tmp_path / "vm.qcow2"
    qemu_img.create(disk, "qcow2", 1024 * 1024)
    form = {"csrf": csrf, "name": "vm-c", "kind": "qcow2", "disks": f"{disk}\n"}
    resp = app_client.post("/backups/sources", data=form, follow_redirects=False)
    assert resp.status_code == 303, resp.text
    assert "Source vm-c added." in app_client.get(resp.headers["location"]).text
    with session_scope(settings.DATABASE_URL) as s:
        row = s.scalar(select(BackupSource).where(BackupSource.name == "vm-c"))
        assert row is not None and row.config == {"disks": [{"path": str(disk)}]}
    # A missing disk is refused inline with the API's reason, and nothing is added.
    form = {"csrf": csrf, "name": "vm-d", "kind": "raw", "disks": "/nonexistent/disk.raw"}
    page = app_client.post("/backups/sources", data=form, headers={"referer": "/backups"})
    assert "/nonexistent/disk.raw" in page.text, page.text  # the refusal, shown as a message
    with session_scope(settings.DATABASE_URL) as s:
        assert s.scalar(select(BackupSource).where(BackupSource.name == "vm-d")) is None
    form = {"csrf": csrf, "name": "nas", "kind": "local", "path": str(tmp_path / "nas")}
    resp = app_client.post("/backups/repositories", data=form, follow_redirects=False)
    assert resp.status_code == 303, resp.text
    assert "Repository nas added." in app_client.get(resp.headers["location"]).text
    with session_scope(settings.DATABASE_URL) as s:
        repo = s.scalar(select(BackupRepository).where(BackupRepository.name == "nas"))
        assert repo is not None and repo.path == str(tmp_path / "nas")


def test_the_version_timeline_shows_parents_current_and_machines(
    app_client: TestClient, settings: Settings
) -> None:
    from diskvault.boot.models import ImageVersion, Machine, MachineMode
    from support.boot_env import insert_golden
    from support.boot_sectors import marker_sector

    image_id, _ = insert_golden(settings, marker_sector())
    with session_scope(settings.DATABASE_URL) as s:
        for version, parent, current, comment in (
            (1, None, False, "as imported"),
            (2, 1, False, "GPU driver"),
            (3, 1, True, "rebuilt from v1"),
        ):
            s.add(ImageVersion(image_id=image_id, version=version, parent_version=parent,
                               is_current=current, comment=comment))  # fmt: skip
        s.add(Machine(name="pc-07", mac="52:54:00:00:00:07", image_id=image_id,
                      mode=MachineMode.keep, initiator_iqn="iqn.2026-01.test:pc07",
                      node=settings.NODE, layer_version=3))  # fmt: skip
    sign_in(app_client)
    page = app_client.get(f"/images/{image_id}").text
    svg = page[page.index('<svg class="timeline"') : page.index("</svg>", page.index("timeline"))]
    assert svg.index(">v1<") < svg.index(">v2<") < svg.index(">v3 (current)<")
    assert svg.count('class="tl-arc"') == 1  # v3 was made from v1, not from v2
    assert "v3 (current): rebuilt from v1; machines: pc-07" in svg
    assert "1 machine<" in svg
    assert "Roll back to v2" in page  # rollback stays next to the timeline
