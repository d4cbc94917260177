"""The job system end to end against real ``diskvault serve`` subprocesses."""

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from support.jobs import submit, wait_for
from support.server import ServerProcess

TEST_ENV = {
    "DISKVAULT_JOB_RETRY_BASE_S": "0.2",
    "DISKVAULT_JOB_HEARTBEAT_S": "0.5",
}


@pytest.fixture(scope="module")
def jobs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("jobs"), env=TEST_ENV, demo_jobs=True)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def client(jobs_server: ServerProcess) -> Iterator[httpx.Client]:
    with jobs_server.client(jobs_server.login()) as c:
        yield c


def _ws(server: ServerProcess, job_id: str, token: str | None) -> list[dict]:
    url = server.url.replace("http://", "ws://") + f"/ws/jobs/{job_id}"
    if token:
        url += f"?token={token}"
    with connect(url, open_timeout=10) as ws:
        return [json.loads(m) for m in ws]


def test_websocket_streams_status_progress_and_completion(
    jobs_server: ServerProcess, client: httpx.Client
) -> None:
    job = submit(client, seconds=2, steps=8)
    token = client.headers["authorization"].split()[1]
    messages = _ws(jobs_server, job["id"], token)
    assert messages[0]["status"] in ("queued", "running")
    assert messages[-1]["type"] == "completed" and messages[-1]["percent"] == 100
    running = [m for m in messages if m["type"] == "progress"]
    assert len(running) >= 3  # 2 s of work streamed at least every 500 ms
    percents = [m["percent"] for m in running]
    assert percents == sorted(percents) and 0 < max(percents) <= 100
    assert any(m["message"] and m["message"].startswith("step ") for m in running)


def test_websocket_token_as_first_message(jobs_server: ServerProcess, client: httpx.Client) -> None:
    job = submit(client, seconds=0.2, steps=1)
    url = jobs_server.url.replace("http://", "ws://") + f"/ws/jobs/{job['id']}"
    token = client.headers["authorization"].split()[1]
    with connect(url) as ws:
        ws.send(json.dumps({"token": token}))
        last = [json.loads(m) for m in ws][-1]
    assert last["status"] == "succeeded"


def test_websocket_bad_token_is_closed_4401(
    jobs_server: ServerProcess, client: httpx.Client
) -> None:
    job = submit(client, seconds=0.1, steps=1)
    url = jobs_server.url.replace("http://", "ws://") + f"/ws/jobs/{job['id']}?token=forged"
    with connect(url) as ws, pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    assert closed.value.rcvd.reason


def test_cancel_stops_the_subprocess_and_removes_partials(
    client: httpx.Client, tmp_path: Path
) -> None:
    partial = tmp_path / "out.partial"
    job = submit(client, seconds=60, subprocess=True, partial=str(partial))
    running = wait_for(client, job["id"], {"running"})
    deadline = time.monotonic() + 10
    while "child pid" not in (running.get("message") or ""):
        assert time.monotonic() < deadline
        running = client.get(f"/api/v1/jobs/{job['id']}").json()
        time.sleep(0.05)
    child = int(running["message"].rsplit(" ", 1)[1])
    assert partial.exists()
    asked = time.monotonic()
    assert client.post(f"/api/v1/jobs/{job['id']}/cancel").status_code == 200
    done = wait_for(client, job["id"], {"cancelled", "failed", "succeeded"}, timeout=15)
    took = time.monotonic() - asked
    assert done["status"] == "cancelled", done
    assert not partial.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)
    print(f"cancel took {took:.2f}s")


def test_retries_with_backoff_then_success(client: httpx.Client) -> None:
    job = submit(client, seconds=0.1, steps=1, fail_times=2)
    done = wait_for(client, job["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded" and done["attempts"] == 3
    assert done["result"]["attempt"] == 3


def test_retries_give_up_after_max_attempts(client: httpx.Client) -> None:
    job = submit(client, seconds=0.1, steps=1, fail_times=10)
    done = wait_for(client, job["id"], {"succeeded", "failed"})
    assert done["status"] == "failed" and done["attempts"] == 3
    assert "gave up after 3 attempts" in done["error"]


def test_crash_ends_failed_not_stuck(client: httpx.Client) -> None:
    job = submit(client, seconds=0.1, steps=1, crash=True)
    done = wait_for(client, job["id"], {"succeeded", "failed"})
    assert done["status"] == "failed"
    assert done["error"] == "ZeroDivisionError: simulated crash in task code"


def test_bad_input(client: httpx.Client) -> None:
    assert client.get("/api/v1/jobs/nope").status_code == 404
    assert client.post("/api/v1/jobs/nope/cancel").status_code == 404
    job = submit(client, seconds=0.05, steps=1)
    wait_for(client, job["id"], {"succeeded"})
    finished = client.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert finished.status_code == 409 and "already ended" in finished.json()["detail"]
    unknown = client.post("/api/v1/jobs", json={"kind": "no-such-kind"})
    assert unknown.status_code == 422


def test_list_filters_and_stats(client: httpx.Client) -> None:
    job = submit(client, "noop")
    wait_for(client, job["id"], {"succeeded"})
    page = client.get("/api/v1/jobs", params={"kind": "noop", "status": "succeeded"}).json()
    assert page["total"] >= 1 and all(j["kind"] == "noop" for j in page["items"])
    stats = client.get("/api/v1/jobs/stats").json()
    assert stats["by_kind"]["noop"] >= 1 and stats["by_status"]["succeeded"] >= 1
    assert 0 <= stats["success_rate"] <= 1 and stats["mean_duration_s"] >= 0


def test_killed_server_fails_its_running_job_and_runs_queued_after_restart(
    tmp_path: Path,
) -> None:
    proc = ServerProcess(
        tmp_path / "srv", env={**TEST_ENV, "DISKVAULT_WORKERS": "1"}, demo_jobs=True
    )
    proc.start()
    with proc.client(proc.login()) as c:
        busy = submit(c, seconds=60, steps=60)
        wait_for(c, busy["id"], {"running"})
        queued = [submit(c, seconds=0.1, steps=1) for _ in range(3)]
        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGKILL)
        proc.proc.wait()
    proc.start()
    with proc.client(proc.login()) as c:
        dead = wait_for(c, busy["id"], {"failed", "succeeded"})
        assert dead["status"] == "failed" and "stopped responding" in dead["error"]
        for job in queued:
            assert wait_for(c, job["id"], {"succeeded", "failed"})["status"] == "succeeded"
    proc.stop()
