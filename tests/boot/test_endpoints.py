"""The boot API on SQLite and PostgreSQL: machines, boot scripts, dnsmasq, versions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from diskvault.boot.bootscript import RateLimiter
from diskvault.db.engine import session_scope
from support.boot_env import (
    BootApp,
    MakeMachine,
    boot_app,
    insert_golden,
    machine_factory,
    new_mac,
    read_sector,
    set_image_status,
)
from support.boot_sectors import marker_sector
from support.http import assert_problem

API = "/api/v1/machines"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def env(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BootApp]:
    with boot_app(tmp_path_factory.mktemp("boot-api"), request.param) as app:
        yield app


@pytest.fixture(scope="module")
def image(env: BootApp) -> tuple[str, Path]:
    return insert_golden(env.settings, marker_sector())


@pytest.fixture(scope="module")
def make(env: BootApp) -> MakeMachine:
    return machine_factory(env)


def boot(env: BootApp, mac: str, host: str = "10.0.2.2:8080") -> str:
    resp = env.client.get("/boot/ipxe", params={"mac": mac}, headers={"host": host})
    assert resp.status_code == 200, resp.text
    assert resp.text.startswith("#!ipxe\n")
    return resp.text


def test_machine_gets_its_own_target_serving_its_writeback_layer(
    env: BootApp, image: tuple[str, Path], make: MakeMachine
) -> None:
    machine = make(image[0], initiator_iqn="iqn.2024-01.com.example:pc-a")
    assert machine["status"] == "READY" and machine["layer_version"] == 1
    target = env.client.get(f"/api/v1/targets/machine/{machine['id']}", headers=env.headers).json()
    assert target["id"] == machine["target_id"]
    assert target["status"] == "ACTIVE"
    assert target["initiators"] == ["iqn.2024-01.com.example:pc-a"]
    disk = env.settings.writeback_dir / machine["id"] / "disk.raw"
    assert target["path"] == str(disk)
    assert read_sector(disk, 0) == marker_sector()
    other = make(image[0])
    assert other["target_id"] != machine["target_id"]
    assert other["initiator_iqn"].endswith(f":client-{other['name']}")


def test_mac_is_validated_and_unique(
    env: BootApp, image: tuple[str, Path], make: MakeMachine
) -> None:
    for bad in ("52:54:00:12:34", "zz:54:00:12:34:56", "52:54:00-12:34:56", "01:00:5e:00:00:01"):
        body = {"name": "bad-mac", "mac": bad, "image_id": image[0]}
        assert_problem(env.client.post(API, json=body, headers=env.headers), 422)
    taken = make(image[0])
    again = {"name": "dup", "mac": taken["mac"].upper().replace(":", "-"), "image_id": image[0]}
    assert (
        taken["name"]
        in assert_problem(env.client.post(API, json=again, headers=env.headers), 409)["detail"]
    )
    same_name = {"name": taken["name"], "mac": new_mac(), "image_id": image[0]}
    assert_problem(env.client.post(API, json=same_name, headers=env.headers), 409)
    missing = {"name": "no-image", "mac": new_mac(), "image_id": "0" * 32}
    assert_problem(env.client.post(API, json=missing, headers=env.headers), 404)


def test_boot_script_sanboots_the_machine_target_at_the_host_asked_for(
    env: BootApp, image: tuple[str, Path], make: MakeMachine
) -> None:
    machine = make(image[0])
    target = env.client.get(f"/api/v1/targets/{machine['target_id']}", headers=env.headers).json()
    port = target["portal"].rsplit(":", 1)[1]
    script = boot(env, machine["mac"].upper())
    assert f"sanboot iscsi:10.0.2.2::{port}:1:{target['iqn']}" in script
    assert f"set initiator-iqn {machine['initiator_iqn']}" in script
    assert "sanboot iscsi:[::1]::" in boot(env, machine["mac"], host=f"[::1]:{port}")
    sessions = env.client.get(f"{API}/{machine['id']}/sessions", headers=env.headers).json()
    assert sessions["total"] == 2
    first, second = sessions["items"][1], sessions["items"][0]
    assert first["ended_at"] is not None and second["ended_at"] is None
    assert second["initiator"] == machine["initiator_iqn"]
    assert second["version"] == 1 and second["mode"] == "discard"


def test_unknown_or_malformed_mac_gets_a_retry_script(env: BootApp) -> None:
    script = boot(env, "52:54:00:ff:ff:fe")
    assert "no machine has MAC 52:54:00:ff:ff:fe" in script
    assert "sleep 30" in script and "reboot" in script and "sanboot" not in script
    assert "is not a MAC address" in boot(env, "garbage")
    env.settings.BOOT_UNKNOWN_CHAIN_URL = "http://10.0.2.2:8080/menu.ipxe"
    try:
        script = boot(env, "52:54:00:ff:ff:fe")
    finally:
        env.settings.BOOT_UNKNOWN_CHAIN_URL = None
    assert "chain http://10.0.2.2:8080/menu.ipxe" in script and "reboot" not in script


def test_image_not_ready_gets_a_script_saying_why(env: BootApp, make: MakeMachine) -> None:
    image_id, _ = insert_golden(env.settings, marker_sector(), status="PROCESSING")
    pending = make(image_id)
    assert pending["status"] == "PENDING" and pending["target_id"] is None
    script = boot(env, pending["mac"])
    assert "is PROCESSING, not READY" in script and "sanboot" not in script
    with session_scope(env.settings.DATABASE_URL) as s:
        set_image_status(s, image_id, "READY")
    assert "sanboot iscsi:" in boot(env, pending["mac"])
    with session_scope(env.settings.DATABASE_URL) as s:
        set_image_status(s, image_id, "CONVERTING")
    assert "not READY" in boot(env, pending["mac"])


def test_boot_requests_are_rate_limited_per_client(env: BootApp) -> None:
    state = env.client.app.state  # type: ignore[attr-defined]
    saved, state.boot_limiter = state.boot_limiter, RateLimiter(2)
    try:
        assert boot(env, "52:54:00:00:00:01")
        assert boot(env, "52:54:00:00:00:01")
        resp = env.client.get("/boot/ipxe", params={"mac": "52:54:00:00:00:01"})
        assert_problem(resp, 429)
        assert int(resp.headers["retry-after"]) >= 1
    finally:
        state.boot_limiter = saved


def test_boot_limits_are_per_mac_as_well_as_per_client(env: BootApp) -> None:
    """Finding 9: 50 machines behind one address boot at once; one looping MAC is limited."""
    state = env.client.app.state  # type: ignore[attr-defined]
    saved = state.boot_limiter, state.boot_mac_limiter
    settings = env.settings
    state.boot_limiter = RateLimiter(settings.BOOT_RATE_LIMIT_PER_MIN)  # defaults, fresh
    state.boot_mac_limiter = RateLimiter(settings.BOOT_RATE_LIMIT_PER_MAC_PER_MIN)
    try:
        for _ in range(50):
            assert boot(env, new_mac())
        looping = new_mac()
        for _ in range(settings.BOOT_RATE_LIMIT_PER_MAC_PER_MIN):
            assert boot(env, looping)
        spelled_otherwise = looping.upper().replace(":", "-")
        resp = env.client.get("/boot/ipxe", params={"mac": spelled_otherwise})
        body = assert_problem(resp, 429)
        assert body["setting"] == "DISKVAULT_BOOT_RATE_LIMIT_PER_MAC_PER_MIN"
        assert looping in body["detail"] and int(resp.headers["retry-after"]) >= 1
        assert boot(env, new_mac())  # its neighbours still boot
    finally:
        state.boot_limiter, state.boot_mac_limiter = saved


def test_dnsmasq_snippet_needs_login_and_names_this_server(env: BootApp) -> None:
    url = "/api/v1/boot/dnsmasq.conf"
    assert_problem(env.client.get(url), 401)
    text = env.client.get(url, headers={**env.headers, "host": "10.0.2.2:8080"}).text
    assert "dhcp-range=10.0.2.2,proxy" in text
    assert "dhcp-boot=tag:ipxe,http://10.0.2.2:8080/boot/ipxe?mac=${net0/mac}" in text
    assert "tftp-root=/srv/tftp" in text


def test_edit_and_delete_machine(env: BootApp, image: tuple[str, Path], make: MakeMachine) -> None:
    machine = make(image[0])
    mac = new_mac()
    resp = env.client.patch(
        f"{API}/{machine['id']}", json={"mode": "keep", "mac": mac.upper()}, headers=env.headers
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["mode"] == "keep" and resp.json()["mac"] == mac
    assert_problem(
        env.client.patch(f"{API}/{machine['id']}", json={"mac": "nope"}, headers=env.headers), 422
    )
    new_init = "iqn.2024-01.com.example:renamed"
    edited = env.client.patch(
        f"{API}/{machine['id']}", json={"initiator_iqn": new_init}, headers=env.headers
    ).json()
    target = env.client.get(f"/api/v1/targets/{edited['target_id']}", headers=env.headers).json()
    assert target["initiators"] == [new_init] and edited["status"] == "READY"
    detail = env.client.get(f"{API}/{machine['id']}", headers=env.headers).json()
    assert detail["connected"] is False and detail["target_iqn"] == target["iqn"]
    assert env.client.delete(f"{API}/{machine['id']}", headers=env.headers).status_code == 204
    assert_problem(env.client.get(f"{API}/{machine['id']}", headers=env.headers), 404)
    assert_problem(env.client.get(f"/api/v1/targets/{target['id']}", headers=env.headers), 404)
    assert not (env.settings.writeback_dir / machine["id"]).exists()


def test_image_in_use_by_a_machine_cannot_be_deleted(env: BootApp, make: MakeMachine) -> None:
    image_id, _ = insert_golden(env.settings, marker_sector())
    machine = make(image_id)
    body = assert_problem(env.client.delete(f"/api/v1/images/{image_id}", headers=env.headers), 409)
    assert machine["name"] in body["detail"]


def test_versions_list_rollback_and_delete_rules(
    env: BootApp, image: tuple[str, Path], make: MakeMachine
) -> None:
    make(image[0])
    url = f"/api/v1/images/{image[0]}/versions"
    page = env.client.get(url, headers=env.headers).json()
    assert [(v["version"], v["is_current"]) for v in page["items"]] == [(1, True)]
    assert page["items"][0]["used_by"]
    assert env.client.post(f"{url}/1/rollback", headers=env.headers).json()["is_current"]
    assert (
        "current version"
        in assert_problem(env.client.delete(f"{url}/1", headers=env.headers), 409)["detail"]
    )
    assert_problem(env.client.delete(f"{url}/9", headers=env.headers), 404)
    assert_problem(env.client.post(f"{url}/9/rollback", headers=env.headers), 404)
    assert_problem(env.client.get("/api/v1/images/nope/versions", headers=env.headers), 404)
