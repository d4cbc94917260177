"""``diskvault backup``: runs, restore points, chains, verify, restore, prune, copy,
plus ``repo`` and ``policy`` sub-groups; ``source_app`` is ``diskvault source``."""

from __future__ import annotations

from typing import Any

import typer

from diskvault.cli import policy_preview as _policies
from diskvault.cli import restore as _restore_cli
from diskvault.cli.client import Client, server_path
from diskvault.cli.common import console, human_bytes, print_table
from diskvault.cli.progress import watch

NAME = "backup"
app = typer.Typer(help="QCOW2 backup chains. Example: diskvault backup start --vm web1 --type auto")
repo_app = typer.Typer(help="Backup repositories. Example: diskvault backup repo list")
policy_app = typer.Typer(help="Backup policies. Example: diskvault backup policy list")
source_app = typer.Typer(help="Backup sources. Example: diskvault source list")
EXTRA_GROUPS = {"source": source_app}  # also top-level: diskvault source add|list
app.add_typer(repo_app, name="repo")
app.add_typer(policy_app, name="policy")
app.add_typer(source_app, name="source")

WAIT = typer.Option(True, "--wait/--no-wait", help="show progress until the job ends")


def _job(client: Client, job: dict[str, Any], wait: bool) -> dict[str, Any]:
    if not wait:
        console.print(f"job {job['id']} queued ({job['kind']})")
        return job
    return watch(client, job["id"])


def _resolve(client: Client, ref: str) -> str:
    """A full restore point id from a unique prefix."""
    return client.full_id("/api/v1/backup", ref)


@app.command()
def start(
    vm: str = typer.Option(..., "--vm", help="source name"),
    type_: str = typer.Option("auto", "--type", help="full | incremental | auto"),
    repo: str = typer.Option(None, "--repo", help="repository name (default: 'default')"),
    speed: int = typer.Option(None, "--speed", help="throttle, bytes per second"),
    wait: bool = WAIT,
) -> None:
    """Back up every disk of a source.

    Example: diskvault backup start --vm web1 --type incremental
    """
    client = Client()
    body = {"vm_name": vm, "backup_type": type_, "repository": repo, "speed": speed}
    final = _job(client, client.post("/api/v1/backup/start", json=body), wait)
    for backup_id in (final.get("result") or {}).get("backup_ids", []):
        point = client.get(f"/api/v1/backup/{backup_id}")
        why = f" ({point['reason']})" if point["reason"] else ""
        console.print(
            f"{point['id']}: {point['backup_type']} of disk {point['disk_index']}, "
            f"{human_bytes(point['bytes_transferred'])} read{why}",
            highlight=False,
        )


@app.command("list")
def list_(
    vm: str = typer.Option(None, "--vm", help="source name"),
    repo: str = typer.Option(None, "--repo"),
    limit: int = typer.Option(50, "--limit"),
) -> None:
    """List restore points, newest first.

    Example: diskvault backup list --vm web1
    """
    params = {"limit": limit, "vm_name": vm, "repository": repo}
    page = Client().get("/api/v1/backup/list", params={k: v for k, v in params.items() if v})
    rows = [
        (
            b["id"][:12],
            b["vm_name"],
            b["disk_index"],
            b["backup_type"] or "-",
            b["status"],
            (b["completed_at"] or b["created_at"])[:19],
            human_bytes(b["file_size"]),
            b.get("boot_status") or "-",
            (b["error"] or b["reason"] or "")[:60],
        )
        for b in page["items"]
    ]
    cols = ["id", "source", "disk", "type", "status", "time", "size", "boots", "note"]
    print_table(f"restore points ({page['total']} total)", cols, rows)


@app.command()
def chain(vm: str = typer.Option(..., "--vm"), repo: str = typer.Option(None, "--repo")) -> None:
    """Show each chain as a tree: the full, then each incremental on top of it.

    Example: diskvault backup chain --vm web1
    """
    params = {"vm_name": vm, **({"repository": repo} if repo else {})}
    data = Client().get("/api/v1/backup/chain", params=params)
    if not data["chains"]:
        console.print(f"no restore points for {vm}")
    for c in data["chains"]:
        size = human_bytes(c["total_size_bytes"])
        label = f"{vm} disk {c['disk_index']} chain {c['chain_id'][:8]} ({size})"
        if c["broken_reason"]:
            label += f" [red]damaged: {c['broken_reason']}[/]"
        from rich.tree import Tree

        node = tree = Tree(label)
        for p in c["points"]:
            flags = []
            if p["immutable_until"]:
                flags.append(f"immutable until {p['immutable_until'][:19]}")
            if p["verify_status"]:
                flags.append(f"verify {p['verify_status']}")
            extra = f" [{', '.join(flags)}]" if flags else ""
            node = node.add(
                f"{p['backup_type']:<11} {p['created_at'][:19]}  {p['id'][:12]}  "
                f"{human_bytes(p['file_size'])}{extra}"
            )
        console.print(tree)
    console.print(f"total: {human_bytes(data['total_size_bytes'])}")


@app.command()
def verify(
    backup_id: str = typer.Argument(..., help="restore point id"), wait: bool = WAIT
) -> None:
    """Check every file of the point's chain and re-read it against its checksums.

    Example: diskvault backup verify 3f2a9c1b7d2e
    """
    client = Client()
    bid = _resolve(client, backup_id)
    _job(client, client.post(f"/api/v1/backup/{bid}/verify"), wait)
    if wait:
        console.print(f"{bid}: verified, no problems found")


@app.command()
def restore(
    backup_id: str = typer.Argument(..., help="restore point id"),
    to: str = typer.Option(
        None, "--to", help="new file on the server (relative: from here, if it runs here)"
    ),
    fmt: str = typer.Option("qcow2", "--format", help="qcow2 | raw | vmdk | vdi | vhdx | vpc"),
    nbd: str = typer.Option(None, "--nbd", help="restore onto this NBD URL instead"),
    image: str = typer.Option(None, "--image", help="restore into the image library as NAME"),
    wait: bool = WAIT,
) -> None:
    """Restore the whole disk of a restore point; the result is compared with it.

    Example: diskvault backup restore 3f2a9c1b7d2e --to /var/lib/diskvault/restores/web1.qcow2
    """
    client = Client()
    bid = _resolve(client, backup_id)
    if nbd:
        body: dict[str, Any] = {"target": "nbd", "url": nbd}
    elif image:
        body = {"target": "image", "image_name": image}
    else:
        path = server_path(client.url, to, "--to") if to else None
        body = {"target": "file", "path": path, "format": fmt}
    final = _job(client, client.post(f"/api/v1/backup/{bid}/restore", json=body), wait)
    if wait:
        result = final.get("result") or {}
        where = result.get("path") or result.get("url") or result.get("image_id")
        console.print(f"restored {bid[:12]} to {where} (verified identical)")


@app.command()
def prune(
    vm: str = typer.Option(..., "--vm"),
    repo: str = typer.Option(None, "--repo"),
    dry_run: bool = typer.Option(False, "--dry-run", help="only show what would happen"),
    policy: str = typer.Option(None, "--policy", help="use this policy's rules"),
    keep_last: int = typer.Option(None, "--keep-last"),
    keep_hourly: int = typer.Option(None, "--keep-hourly"),
    keep_daily: int = typer.Option(None, "--keep-daily"),
    keep_weekly: int = typer.Option(None, "--keep-weekly"),
    keep_monthly: int = typer.Option(None, "--keep-monthly"),
    keep_yearly: int = typer.Option(None, "--keep-yearly"),
    wait: bool = WAIT,
) -> None:
    """Remove restore points by retention rules (PBS semantics), or simulate it.

    Example: diskvault backup prune --vm web1 --keep-daily 7 --keep-weekly 4 --dry-run
    """
    client = Client()
    rules = {
        "keep_last": keep_last,
        "keep_hourly": keep_hourly,
        "keep_daily": keep_daily,
        "keep_weekly": keep_weekly,
        "keep_monthly": keep_monthly,
        "keep_yearly": keep_yearly,
    }
    body = {"vm_name": vm, "repository": repo, "policy": policy, "dry_run": dry_run, **rules}
    out = client.post("/api/v1/backup/prune", json=body)
    if not dry_run:
        out = _job(client, out, wait).get("result") or {}
    for disk in out.get("disks", []):
        rows = [
            (d["id"][:12], d["created_at"][:19], d["backup_type"], "keep", d["reason"])
            for d in disk["keep"]
        ]
        rows += [
            (d["id"][:12], d["created_at"][:19], d["backup_type"], "remove", d["reason"])
            for d in disk["remove"]
        ]
        rows.sort(key=lambda r: r[1], reverse=True)
        title = f"{vm} disk {disk['disk']}" + (" (simulation)" if dry_run else "")
        print_table(title, ["id", "time", "type", "action", "why"], rows)


@app.command()
def delete(
    backup_id: str = typer.Argument(..., help="restore point id"), wait: bool = WAIT
) -> None:
    """Delete a restore point; one in the middle is merged into the next first.

    Example: diskvault backup delete 3f2a9c1b7d2e
    """
    client = Client()
    bid = _resolve(client, backup_id)
    _job(client, client.delete(f"/api/v1/backup/{bid}"), wait)
    if wait:
        console.print(f"deleted {bid}")


@app.command()
def copy(
    to: str = typer.Option(..., "--to", help="target repository"),
    repo: str = typer.Option(None, "--repo", help="source repository"),
    vm: str = typer.Option(None, "--vm"),
    wait: bool = WAIT,
) -> None:
    """Copy restore points to a second repository (local or s3), verified.

    Example: diskvault backup copy --to offsite --vm web1
    """
    client = Client()
    body = {"target": to, "repository": repo, "vm_name": vm}
    final = _job(client, client.post("/api/v1/backup/copy", json=body), wait)
    result = final.get("result") or {}
    if wait:
        console.print(
            f"copied {len(result.get('copied', []))}, already there "
            f"{len(result.get('skipped', []))}, {human_bytes(result.get('bytes', 0))} sent"
        )


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
def repo_list() -> None:
    """List repositories with their free space.

    Example: diskvault backup repo list
    """
    page = Client().get("/api/v1/repositories")
    rows = [
        (
            r["name"],
            r["kind"],
            r["path"] or r["url"],
            human_bytes(r["available_size_bytes"]),
            r["immutability_days"],
            r["immutable_flag"],
        )
        for r in page["items"]
    ]
    print_table("repositories", ["name", "kind", "where", "free", "immutable days", "chattr"], rows)


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
def policy_list() -> None:
    """List policies.

    Example: diskvault backup policy list
    """
    page = Client().get("/api/v1/policies")
    rows = [
        (
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
    cols = ["name", "sources", "schedule", "retention", "max chain", "immutable days", "last run"]
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
def source_list() -> None:
    """List backup sources.

    Example: diskvault source list
    """
    page = Client().get("/api/v1/sources")
    rows = [(s["name"], s["kind"], s["config"]) for s in page["items"]]
    print_table("sources", ["name", "kind", "config"], rows)


# File-level restore lives in its own domain; its verbs also belong under `backup`.
_restore_cli.register(app)
_policies.register(policy_app)
