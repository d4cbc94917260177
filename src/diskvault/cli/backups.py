"""``diskvault backup``: runs, restore points, chains, verify, restore, prune, copy,
plus the ``repo``, ``policy`` and ``source`` groups of cli/backup_config.py
(``source`` is also top level: ``diskvault source``)."""

from __future__ import annotations

from typing import Any

import typer

from diskvault.cli import restore as _restore_cli
from diskvault.cli.backup_config import policy_app, repo_app, source_app
from diskvault.cli.client import Client, server_path
from diskvault.cli.common import JSON, QUIET, console, emit, human_bytes, print_table, short_ids
from diskvault.cli.progress import watch

NAME = "backup"
app = typer.Typer(help="QCOW2 backup chains. Example: diskvault backup start --vm web1 --type auto")
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
    as_json: bool = JSON,
    quiet: bool = QUIET,
) -> None:
    """List restore points, newest first.

    Example: diskvault backup list --vm web1
    """
    params = {"limit": limit, "vm_name": vm, "repository": repo}
    page = Client().get("/api/v1/backup/list", params={k: v for k, v in params.items() if v})
    emit(page, as_json=as_json, quiet=quiet, human=lambda: _list(page))


def _list(page: dict[str, Any]) -> None:
    ids = short_ids(page["items"])
    rows = [
        (
            ids[b["id"]],
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
def chain(
    vm: str = typer.Option(..., "--vm"),
    repo: str = typer.Option(None, "--repo"),
    as_json: bool = JSON,
    quiet: bool = QUIET,
) -> None:
    """Show each chain as a tree: the full, then each incremental on top of it.

    Example: diskvault backup chain --vm web1
    """
    params = {"vm_name": vm, **({"repository": repo} if repo else {})}
    data = Client().get("/api/v1/backup/chain", params=params)
    points = [p for c in data["chains"] for p in c["points"]]
    if quiet:
        emit({"items": points}, as_json=False, quiet=True, human=lambda: None)
    else:
        emit(data, as_json=as_json, quiet=False, human=lambda: _tree(vm, data, points))


def _tree(vm: str, data: dict[str, Any], points: list[dict[str, Any]]) -> None:
    ids = short_ids(points)
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
                f"{p['backup_type']:<11} {p['created_at'][:19]}  {ids[p['id']]}  "
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


_restore_cli.register(app)
