"""``diskvault backup repo|policy|source``: where backups go, when they run, what they read."""

from __future__ import annotations

from typing import Any

import typer

from diskvault.cli import policy_preview as _policies
from diskvault.cli.client import Client
from diskvault.cli.common import (
    JSON,
    QUIET,
    console,
    emit,
    human_bytes,
    print_table,
    short_ids,
    show_object,
)

repo_app = typer.Typer(help="Backup repositories. Example: diskvault backup repo list")
policy_app = typer.Typer(help="Backup policies. Example: diskvault backup policy list")
source_app = typer.Typer(help="Backup sources. Example: diskvault source list")


# -- repositories -------------------------------------------------------------------


@repo_app.command("add")
def repo_add(
    name: str = typer.Argument(...),
    path: str = typer.Option(None, "--path", help="local: a mounted directory"),
    url: str = typer.Option(None, "--url", help="s3://bucket/prefix?endpoint_url=..."),
    immutable_days: float = typer.Option(0.0, "--immutable-days"),
    attach: bool = typer.Option(False, "--attach", help="rebuild chains from its sidecars"),
    encryption: str = typer.Option("none", "--encryption", help="none | luks"),
    compression: str = typer.Option("none", "--compression", help="none | zstd"),
    key_file: str = typer.Option(None, "--key-file", help="absolute path of the key file"),
    create_key: bool = typer.Option(False, "--create-key", help="make the key file"),
) -> None:
    """Add a repository.

    Example: diskvault backup repo add nas --path /mnt/nas/backups --immutable-days 7
    Example: diskvault backup repo add vault --path /mnt/usb --encryption luks \
        --key-file /root/vault.key --create-key
    """
    body = {
        "name": name,
        "kind": "s3" if url else "local",
        "path": path,
        "url": url,
        "immutability_days": immutable_days,
        "attach": attach,
        "encryption": encryption,
        "compression": compression,
        "key_file": key_file,
        "create_key": create_key,
    }
    repo = Client().post("/api/v1/repositories", json=body)
    console.print(f"repository {repo['name']} ({repo['kind']}) added: {repo['id']}")
    _print_key(repo)


def _print_key(repo: dict[str, Any]) -> None:
    if repo.get("key_fingerprint"):
        console.print(f"key {repo['key_fingerprint']} ({repo['key_file']})")
    if repo.get("paper_key"):
        console.print("A new key was created. Print or copy this now; it is not shown again:")
        console.print(repo["paper_key"], markup=False, highlight=False)


@repo_app.command("rekey")
def repo_rekey(
    name: str = typer.Argument(...),
    key_file: str = typer.Option(..., "--key-file", help="the new key file"),
    create_key: bool = typer.Option(False, "--create-key", help="make the key file"),
) -> None:
    """New chains under a new key; older points stay readable with the old one.

    Example: diskvault backup repo rekey vault --key-file /root/vault-2.key --create-key
    """
    body = {"key_file": key_file, "create_key": create_key}
    repo = Client().post(f"/api/v1/repositories/{name}/rekey", json=body)
    console.print(f"repository {repo['name']} rekeyed")
    _print_key(repo)


@repo_app.command("list")
def repo_list(as_json: bool = JSON, quiet: bool = QUIET) -> None:
    """List repositories with their free space.

    Example: diskvault backup repo list
    """
    page = Client().get("/api/v1/repositories")
    emit(page, as_json=as_json, quiet=quiet, human=lambda: _repo_list(page))


@repo_app.command("show")
def repo_show(
    repo: str = typer.Argument(..., help="name, id or a unique id prefix (4+)"),
    as_json: bool = JSON,
    quiet: bool = QUIET,
) -> None:
    """Show one repository.

    Example: diskvault backup repo show default
    """
    show_object(f"/api/v1/repositories/{repo}", f"repository {repo}", as_json=as_json, quiet=quiet)


def _repo_list(page: dict[str, Any]) -> None:
    ids = short_ids(page["items"])
    rows = [
        (
            ids[r["id"]],
            r["name"],
            r["kind"],
            r["path"] or r["url"],
            human_bytes(r["available_size_bytes"]),
            r["immutability_days"],
            r["immutable_flag"],
        )
        for r in page["items"]
    ]
    cols = ["id", "name", "kind", "path", "free", "immutable days", "chattr"]
    print_table("repositories", cols, rows)


@repo_app.command("rescan")
def repo_rescan(name: str = typer.Argument(...)) -> None:
    """Rebuild restore points and chains from a repository's sidecars.

    Example: diskvault backup repo rescan nas
    """
    out = Client().post(f"/api/v1/repositories/{name}/rescan")
    console.print(
        f"{out['repository']}: {out['added']} added, {out['known']} known, {out['chains']} chains"
    )


# -- policies -------------------------------------------------------------------------


@policy_app.command("add")
def policy_add(
    name: str = typer.Argument(...),
    source: list[str] = typer.Option(..., "--source", help="repeat for several"),
    schedule: str = typer.Option(None, "--schedule", help="cron, e.g. '0 2 * * *'"),
    repo: str = typer.Option(None, "--repo"),
    keep_last: int = typer.Option(None, "--keep-last"),
    keep_daily: int = typer.Option(None, "--keep-daily"),
    keep_weekly: int = typer.Option(None, "--keep-weekly"),
    keep_monthly: int = typer.Option(None, "--keep-monthly"),
    keep_yearly: int = typer.Option(None, "--keep-yearly"),
    max_chain: int = typer.Option(None, "--max-chain-length"),
    immutable_days: float = typer.Option(0.0, "--immutable-days"),
    verify_schedule: str = typer.Option(None, "--verify-schedule"),
    copy_to: str = typer.Option(None, "--copy-to"),
    adopt_existing: bool = typer.Option(
        False, "--adopt-existing", help="also prune and merge points it did not make"
    ),
    yes: bool = _policies.YES,
) -> None:
    """Add a policy: schedule, retention, chain length, immutability, verify, copy.
    Shows what its first run would keep, remove and merge, and asks if it removes any.

    Example: diskvault backup policy add nightly --source web1 --schedule '0 2 * * *' --keep-daily 7
    """
    body = {
        "name": name,
        "sources": source,
        "schedule": schedule,
        "repository": repo,
        "keep_last": keep_last,
        "keep_daily": keep_daily,
        "keep_weekly": keep_weekly,
        "keep_monthly": keep_monthly,
        "keep_yearly": keep_yearly,
        "max_chain_length": max_chain,
        "immutability_days": immutable_days,
        "verify_schedule": verify_schedule,
        "copy_to": copy_to,
        "adopt_existing": adopt_existing,
    }
    client = Client()
    preview = client.post("/api/v1/policies/preview", json=body)
    _policies.show(preview)
    _policies.confirm(preview, yes, "Its first run removes or merges restore points. Add it?")
    policy = client.post("/api/v1/policies", json=body)
    console.print(f"policy {policy['name']} added: {policy['id']}")


@policy_app.command("list")
def policy_list(as_json: bool = JSON, quiet: bool = QUIET) -> None:
    """List policies.

    Example: diskvault backup policy list
    """
    page = Client().get("/api/v1/policies")
    emit(page, as_json=as_json, quiet=quiet, human=lambda: _policy_list(page))


@policy_app.command("show")
def policy_show(
    policy: str = typer.Argument(..., help="name, id or a unique id prefix (4+)"),
    as_json: bool = JSON,
    quiet: bool = QUIET,
) -> None:
    """Show one policy.

    Example: diskvault backup policy show nightly
    """
    show_object(f"/api/v1/policies/{policy}", f"policy {policy}", as_json=as_json, quiet=quiet)


def _policy_list(page: dict[str, Any]) -> None:
    ids = short_ids(page["items"])
    rows = [
        (
            ids[p["id"]],
            p["name"],
            ",".join(p["sources"]),
            p["schedule"],
            p["retention"],
            p["max_chain_length"],
            p["immutability_days"],
            (p["last_run_at"] or "")[:19],
        )
        for p in page["items"]
    ]
    cols = ["id", "name", "sources", "schedule", "retention", "max chain", "immutable", "last run"]
    print_table("policies", cols, rows)


@policy_app.command("run")
def policy_run(name: str = typer.Argument(...), yes: bool = _policies.YES) -> None:
    """Run a policy now (one backup job per source); asks first when its first run
    would remove or merge points.

    Example: diskvault backup policy run nightly
    """
    client = Client()
    _policies.before_first_run(client, name, yes)
    out = client.post(f"/api/v1/policies/{name}/run")
    console.print(f"queued jobs: {', '.join(out['job_ids'])}")


# -- sources ---------------------------------------------------------------------------


@source_app.command("add")
def source_add(
    name: str = typer.Argument(..., help="also the vm_name of backups"),
    kind: str = typer.Option(..., "--kind", help="qcow2 | raw | nbd | qmp | libvirt"),
    disk: list[str] = typer.Option(None, "--disk", help="path, URL, node or target; repeat"),
    bitmap: str = typer.Option(None, "--bitmap", help="nbd: dirty bitmap name"),
    socket: str = typer.Option(None, "--socket", help="qmp: monitor socket path"),
    domain: str = typer.Option(None, "--domain", help="libvirt: domain name"),
    uri: str = typer.Option(None, "--uri", help="libvirt: connection URI"),
    unverified: bool = typer.Option(
        False, "--unverified", help="add it though its disks are not there or readable yet"
    ),
) -> None:
    """Register a backup source; its disks must exist and be readable (or --unverified).

    Example: diskvault source add web1 --kind qcow2 --disk /var/lib/vms/web1.qcow2
    """
    disks: list[Any] = list(disk or [])
    if kind == "nbd":
        disks = [{"url": d, "bitmap": bitmap} for d in disks]
    elif kind == "qmp":
        disks = [{"node": d} for d in disks]
    body: dict[str, Any] = {"name": name, "kind": kind, "disks": disks, "unverified": unverified}
    body.update({k: v for k, v in {"socket": socket, "domain": domain, "uri": uri}.items() if v})
    src = Client().post("/api/v1/sources", json=body)
    console.print(f"source {src['name']} ({src['kind']}) added: {src['config']}", highlight=False)


@source_app.command("list")
def source_list(as_json: bool = JSON, quiet: bool = QUIET) -> None:
    """List backup sources.

    Example: diskvault source list
    """
    page = Client().get("/api/v1/sources")
    emit(page, as_json=as_json, quiet=quiet, human=lambda: _source_list(page))


def _source_list(page: dict[str, Any]) -> None:
    ids = short_ids(page["items"])
    rows = [(ids[s["id"]], s["name"], s["kind"], s["config"]) for s in page["items"]]
    print_table("sources", ["id", "name", "kind", "config"], rows)


@source_app.command("show")
def source_show(
    source: str = typer.Argument(..., help="name, id or a unique id prefix (4+)"),
    as_json: bool = JSON,
    quiet: bool = QUIET,
) -> None:
    """Show one backup source.

    Example: diskvault source show web1
    """
    show_object(f"/api/v1/sources/{source}", f"source {source}", as_json=as_json, quiet=quiet)


# File-level restore lives in its own domain; its verbs also belong under `backup`.


_policies.register(policy_app)
