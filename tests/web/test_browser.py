"""The console in real Chromium against a real ``diskvault serve``; each flow saves screenshots."""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from support.console import NARROW, WIDE, Console
from support.restore_disks import ext4_image
from support.server import ADMIN_PASSWORD

LONG = 180_000  # ms: jobs run on the server's workers, on a busy 2-core machine
GUEST_FILE = secrets.token_bytes(200_000)
ODD_NAME = "<img src=x onerror=alert(1)>.txt"  # '/' cannot be in a file name


def shot(page: Page, console: Console, name: str, *, narrow: bool = False) -> None:
    page.screenshot(path=str(console.shots / f"{name}-1280.png"), full_page=True)
    if narrow:
        page.set_viewport_size(NARROW)
        page.screenshot(path=str(console.shots / f"{name}-390.png"), full_page=True)
        page.set_viewport_size(WIDE)


def login(
    page: Page, console: Console, user: str = "admin", password: str = ADMIN_PASSWORD
) -> None:
    page.goto(console.server.url + "/login")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Log out")).to_be_visible()


@pytest.fixture
def page(browser: Browser, console: Console) -> Iterator[Page]:
    context = browser.new_context(viewport=WIDE, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


@pytest.fixture(scope="module")
def api(console: Console) -> Iterator[httpx.Client]:
    with console.server.client(console.server.login()) as client:
        yield client


def _upload(api: httpx.Client, path: Path, name: str, **fields: str) -> dict[str, Any]:
    with path.open("rb") as fh:
        resp = api.post(
            "/api/v1/images/upload",
            files={"file": (path.name, fh)},
            data={"name": name, "image_type": "system", **fields},
        )
    assert resp.status_code == 202, resp.text
    body: dict[str, Any] = resp.json()
    return body


@pytest.fixture(scope="module")
def ready_image(api: httpx.Client, console: Console) -> str:
    disk = console.root / "golden.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", disk, "16M"], check=True)
    image = _upload(api, disk, "golden")
    for _ in range(600):
        body = api.get(f"/api/v1/images/{image['id']}").json()
        if body["status"] in ("READY", "ERROR"):
            break
        time.sleep(0.2)
    assert body["status"] == "READY", body
    return str(image["id"])


@pytest.fixture(scope="module")
def source(api: httpx.Client, console: Console) -> str:
    """A qcow2 guest disk (ext4, no partitions) holding docs/hello.bin and an odd name."""
    tree = console.root / "tree"
    (tree / "docs").mkdir(parents=True)
    (tree / "docs" / "hello.bin").write_bytes(GUEST_FILE)
    (tree / ODD_NAME).write_text("odd\n")
    raw = ext4_image(console.root / "guest.raw", tree, 16 * 1024 * 1024, label="GUEST")
    disk = console.root / "guest.qcow2"
    subprocess.run(["qemu-img", "convert", "-q", "-O", "qcow2", raw, disk], check=True)
    resp = api.post("/api/v1/sources", json={"name": "web1", "kind": "qcow2", "path": str(disk)})
    assert resp.status_code == 201, resp.text
    return "web1"


def test_login_and_logout(page: Page, console: Console) -> None:
    page.goto(console.server.url + "/jobs")
    expect(page).to_have_url(console.server.url + "/login?next=/jobs")
    shot(page, console, "login", narrow=True)
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(console.server.url + "/jobs")  # back where the user was going
    page.goto(console.server.url + "/")
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    expect(page.locator("svg.bar").first).to_be_visible()
    shot(page, console, "dashboard", narrow=True)
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_text("You are signed out.")).to_be_visible()
    page.goto(console.server.url + "/images")
    expect(page).to_have_url(console.server.url + "/login?next=/images")


def test_upload_vhdx_reaches_ready(page: Page, console: Console) -> None:
    disk = console.root / "upload.vhdx"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vhdx", disk, "24M"], check=True)
    login(page, console)
    page.goto(console.server.url + "/images")
    page.get_by_text("Upload an image").click()
    page.get_by_label("Name", exact=True).fill("<script>alert(1)</script>")
    page.get_by_label("Convert to").select_option("qcow2")
    page.get_by_label("File", exact=True).set_input_files(str(disk))
    page.get_by_role("button", name="Upload").click()
    expect(page.locator(".upload-text")).to_contain_text("Upload", timeout=LONG)
    shot(page, console, "upload-progress")
    expect(page.locator("#image-status")).to_have_text("READY", timeout=LONG)
    expect(page.get_by_role("heading", level=1)).to_contain_text("<script>alert(1)</script>")
    expect(page.locator("dd", has_text="qcow2").first).to_be_visible()
    shot(page, console, "image-detail", narrow=True)
    page.goto(console.server.url + "/images")
    expect(page.get_by_role("link", name="<script>alert(1)</script>")).to_be_visible()
    shot(page, console, "images", narrow=True)


def test_create_target(page: Page, console: Console, ready_image: str) -> None:
    login(page, console)
    page.goto(console.server.url + "/targets")
    page.get_by_label("Image", exact=True).select_option(ready_image)
    page.get_by_label("Name (IQN suffix)").fill("webtarget")
    page.get_by_role("button", name="Create target").click()
    expect(page.locator(".flash")).to_contain_text("is serving")
    row = page.locator("tr", has_text="webtarget")
    expect(row.get_by_text("ACTIVE")).to_be_visible()
    expect(row.get_by_text("0 sessions")).to_be_visible()
    shot(page, console, "targets", narrow=True)


def test_add_machine_and_see_its_ipxe_script(
    page: Page, console: Console, ready_image: str
) -> None:
    login(page, console)
    page.goto(console.server.url + "/machines")
    page.get_by_label("Name", exact=True).fill("pc-01")
    page.get_by_label("MAC", exact=True).fill("52:54:00:aa:bb:01")
    page.get_by_label("Image", exact=True).select_option(ready_image)
    page.get_by_role("button", name="Add machine").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("pc-01")
    script = page.locator("#ipxe")
    expect(script).to_contain_text("#!ipxe")
    expect(script).to_contain_text("sanboot iscsi:")
    shot(page, console, "machine", narrow=True)
    page.goto(console.server.url + "/machines")
    expect(page.locator("article.machine", has_text="pc-01")).to_be_visible()
    shot(page, console, "machines")


def _back_up(page: Page, console: Console, source: str) -> None:
    page.goto(console.server.url + f"/backups/{source}")
    page.get_by_role("button", name="Back up now").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("backup-run")
    expect(page.locator("h1 .badge")).to_have_text("succeeded", timeout=LONG)


def test_back_up_twice_and_see_two_blocks(page: Page, console: Console, source: str) -> None:
    login(page, console)
    _back_up(page, console, source)
    _back_up(page, console, source)
    page.goto(console.server.url + f"/backups/{source}")
    blocks = page.locator("svg.chain g.point")
    expect(blocks).to_have_count(2)
    expect(page.locator('svg.chain g[data-kind="full"]')).to_have_count(1)
    expect(page.locator('svg.chain g[data-kind="incremental"]')).to_have_count(1)
    shot(page, console, "chain", narrow=True)


def test_prune_simulator(page: Page, console: Console, source: str) -> None:
    login(page, console)
    page.goto(console.server.url + f"/backups/{source}")
    if page.locator("svg.chain g.point").count() < 2:
        pytest.fail("needs the two restore points of test_back_up_twice_and_see_two_blocks")
    page.get_by_label("keep last").fill("1")
    page.get_by_role("button", name="Simulate").click()
    table = page.locator("#simulation")
    expect(table.locator("tbody tr")).to_have_count(2)
    expect(table).to_contain_text("keep")
    shot(page, console, "prune")
    with console.server.client(console.server.login()) as api:
        points = api.get("/api/v1/backup/list", params={"vm_name": source}).json()
    assert points["total"] == 2  # simulating deleted nothing


def test_mount_browse_and_download(page: Page, console: Console, source: str) -> None:
    login(page, console)
    page.goto(console.server.url + f"/backups/{source}")
    page.get_by_role("button", name="Browse files").first.click()
    expect(page.get_by_text("Mounted read-only.")).to_be_visible(timeout=LONG)
    files = page.locator("#files")
    expect(files.get_by_text(ODD_NAME)).to_be_visible()  # rendered as text, not markup
    files.get_by_role("link", name="docs/").click()
    expect(page.locator(".crumbs")).to_contain_text("docs")
    shot(page, console, "file-browser", narrow=True)
    with page.expect_download() as download:
        files.get_by_role("link", name="hello.bin").click()
    assert Path(download.value.path()).read_bytes() == GUEST_FILE
    page.get_by_role("button", name="Unmount now").click()
    expect(page.get_by_text("Unmounted.")).to_be_visible(timeout=LONG)


def test_restore_point_to_the_image_library(
    page: Page, console: Console, source: str, api: httpx.Client
) -> None:
    login(page, console)
    page.goto(console.server.url + f"/backups/{source}")
    if page.locator("svg.chain g.point").count() < 2:
        pytest.fail("needs the two restore points of test_back_up_twice_and_see_two_blocks")
    expect(page.locator("svg.columns rect")).to_have_count(2)  # sizes over time
    page.get_by_label("To", exact=True).select_option("image")
    page.get_by_label("Name, path or URL").fill("restored-web1")
    page.get_by_role("button", name="Restore", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("backup-restore")
    expect(page.locator("h1 .badge")).to_have_text("succeeded", timeout=LONG)
    names = [i["name"] for i in api.get("/api/v1/images", params={"limit": 100}).json()["items"]]
    assert "restored-web1" in names


def test_organizer_scan_breakdown(page: Page, console: Console) -> None:
    (console.organizer_root / "disk.qcow2").write_bytes(b"QFI\xfb" + bytes(64 * 1024))
    (console.organizer_root / "notes.txt").write_text("hello\n" * 100)
    (console.organizer_root / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(20_000))
    login(page, console)
    page.goto(console.server.url + "/organizer")
    page.get_by_label("Operation").select_option("scan")
    page.get_by_label("Location (path or s3://)").fill(str(console.organizer_root))
    page.get_by_role("button", name="Start").click()
    breakdown = page.locator("#breakdown svg text")
    expect(breakdown.first).to_be_visible(timeout=LONG)
    assert breakdown.count() >= 4  # at least two categories, a label and a size each
    shot(page, console, "organizer-scan", narrow=True)


def test_viewer_sees_no_buttons_and_is_refused(
    page: Page, console: Console, api: httpx.Client, ready_image: str
) -> None:
    resp = api.post(
        "/api/v1/auth/signup",
        json={"username": "viewer1", "password": "viewer-password", "role": "viewer"},
    )
    assert resp.status_code in (201, 409), resp.text
    login(page, console, "viewer1", "viewer-password")
    page.goto(console.server.url + f"/images/{ready_image}")
    expect(page.get_by_role("heading", level=1)).to_contain_text("golden")
    for label in ("Delete image", "Convert", "Resize"):
        expect(page.get_by_role("button", name=label)).to_have_count(0)
    page.goto(console.server.url + "/images")
    expect(page.get_by_text("Upload an image")).to_have_count(0)
    shot(page, console, "viewer-image")
    csrf = page.locator('meta[name="csrf-token"]').get_attribute("content")
    forced = page.request.post(
        console.server.url + f"/images/{ready_image}/delete", form={"csrf": csrf or ""}
    )
    assert forced.status == 403
    assert api.get(f"/api/v1/images/{ready_image}").status_code == 200


def test_form_without_csrf_is_refused(page: Page, console: Console, api: httpx.Client) -> None:
    login(page, console)
    page.goto(console.server.url + "/admin")
    status = page.evaluate(
        """async () => (await fetch('/admin/users', {method: 'POST',
             body: new URLSearchParams({username: 'mallory', password: 'xxxxxxxxxx'})})).status"""
    )
    assert status == 403
    users = api.get("/api/v1/users").json()["items"]
    assert "mallory" not in [u["username"] for u in users]
    shot(page, console, "admin")


def test_api_with_bearer_token_still_works(console: Console, api: httpx.Client) -> None:
    assert api.get("/api/v1/images").status_code == 200
    assert httpx.get(console.server.url + "/api/v1/images").status_code == 401
