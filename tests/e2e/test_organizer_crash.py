"""A server killed mid-apply: the journal survives the restart and rollback undoes it."""

from __future__ import annotations

import json
import os
import time

import pytest

from support.organizer_trees import items, put, snapshot, start_op, wait_op
from support.server import ServerProcess

FILES = 30


def test_sigkill_mid_apply_then_restart_and_roll_back(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    shares = tmp_path_factory.mktemp("crash-shares")
    root = shares / "pile"
    for i in range(FILES):
        put(root / f"dir{i % 3}" / f"file{i:02d}.bin", os.urandom(4096 + i))
    before = snapshot(root)
    env = {
        "DISKVAULT_ORGANIZER_ROOTS": json.dumps([shares.as_uri()]),
        "DISKVAULT_ORGANIZER_APPLY_DELAY_S": "0.1",
    }
    server = ServerProcess(tmp_path_factory.mktemp("crash-server"), env=env)
    server.start()
    try:
        with server.client(server.login()) as client:
            rules = [{"match": {}, "action": "move", "destination": "flat/{name}"}]
            op = start_op(client, type="apply", location=root.as_uri(), rules=rules)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                done = [r for r in items(client, op["id"]) if r["state"] == "done"]
                if len(done) >= 5:
                    break
                time.sleep(0.05)
            server.kill()
        assert snapshot(root) != before  # it really was interrupted halfway

        server.start()
        with server.client(server.login()) as client:
            crashed = wait_op(client, op["id"])
            assert crashed["status"] == "failed"
            journal = items(client, op["id"])
            assert 5 <= len(journal) < FILES
            undo = client.post(f"/api/v1/operations/{op['id']}/rollback")
            assert undo.status_code == 202, undo.text
            result = wait_op(client, undo.json()["id"])
            assert result["status"] == "succeeded", result
            assert result["summary"]["changed"] == 0
            assert result["summary"]["not-restorable"] == 0
        assert snapshot(root) == before
        flat = root / "flat"
        assert not flat.exists() or not any(p.is_file() for p in flat.iterdir())
    finally:
        server.stop()
