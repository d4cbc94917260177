"""Policy previews in the CLI: what the next run keeps, removes and merges, the
question asked before the first destructive run, and ``policy set|preview``."""

from __future__ import annotations

from typing import Any

import typer

from diskvault.cli.client import Client
from diskvault.cli.common import console, print_table

YES = typer.Option(False, "--yes", "-y", help="do not ask before a run that removes or merges")


def show(preview: dict[str, Any]) -> None:
    rows = [
        ("merge", m["id"], f"{m['vm_name']}/{m['disk']}", f"into {m['into']}", m["rule"])
        for m in preview["merge"]
    ]
    for action in ("remove", "keep"):
        rows += [
            (action, p["id"], f"{p['vm_name']}/{p['disk']}", p["created_at"][:19], p["reason"])
            for p in preview[action]
        ]
    if rows:
        print_table("next run", ["action", "id", "vm/disk", "created", "rule"], rows)
    console.print(
        f"next run: keep {len(preview['keep'])}, remove {len(preview['remove'])}, "
        f"merge {len(preview['merge'])}"
        + ("" if preview["adopt_existing"] else " (only points this policy made are touched)")
    )


def confirm(preview: dict[str, Any], yes: bool, question: str) -> None:
    """Ask ``question`` when the preview removes or merges anything; no: exit 1."""
    if yes or not preview["destructive"]:
        return
    if not typer.confirm(question, default=False):
        console.print("nothing changed")
        raise typer.Exit(1)


def before_first_run(client: Client, name: str, yes: bool) -> None:
    """A policy that never ran: show its preview and ask before anything goes."""
    policy = client.get(f"/api/v1/policies/{name}")
    if policy["last_run_at"] is not None or yes:
        return
    preview = client.post(f"/api/v1/policies/{name}/preview", json={})
    if preview["destructive"]:
        show(preview)
    confirm(preview, yes, f"This is {name}'s first run and it removes or merges points. Run it?")


def register(policy_app: typer.Typer) -> None:
    @policy_app.command("set")
    def policy_set(
        name: str = typer.Argument(...),
        keep_last: int = typer.Option(None, "--keep-last"),
        keep_daily: int = typer.Option(None, "--keep-daily"),
        keep_weekly: int = typer.Option(None, "--keep-weekly"),
        keep_monthly: int = typer.Option(None, "--keep-monthly"),
        keep_yearly: int = typer.Option(None, "--keep-yearly"),
        max_chain: int = typer.Option(None, "--max-chain-length"),
        schedule: str = typer.Option(None, "--schedule", help="cron, e.g. '0 2 * * *'"),
        adopt_existing: bool = typer.Option(
            None, "--adopt-existing/--own-points-only", help="also manage hand-made points"
        ),
        enabled: bool = typer.Option(None, "--enable/--disable"),
        yes: bool = YES,
    ) -> None:
        """Change a policy; shows what its next run would keep, remove and merge first.

        Example: diskvault backup policy set nightly --keep-daily 14 --adopt-existing
        """
        given = {
            "keep_last": keep_last,
            "keep_daily": keep_daily,
            "keep_weekly": keep_weekly,
            "keep_monthly": keep_monthly,
            "keep_yearly": keep_yearly,
            "max_chain_length": max_chain,
            "schedule": schedule,
            "adopt_existing": adopt_existing,
            "enabled": enabled,
        }
        body = {k: v for k, v in given.items() if v is not None}
        client = Client()
        preview = client.post(f"/api/v1/policies/{name}/preview", json=body)
        show(preview)
        confirm(preview, yes, "The next run removes or merges restore points. Save the change?")
        saved = client.request("PATCH", f"/api/v1/policies/{name}", json=body)
        console.print(f"policy {saved['name']} changed")

    @policy_app.command("preview")
    def policy_preview(name: str = typer.Argument(...)) -> None:
        """What a policy's next run would keep, remove and merge, and which rule decided.

        Example: diskvault backup policy preview nightly
        """
        show(Client().post(f"/api/v1/policies/{name}/preview", json={}))
