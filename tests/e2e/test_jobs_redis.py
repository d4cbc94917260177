"""Scale-out: RedisHuey, a server that only serves, and two ``diskvault worker``s."""

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import redis

from support.databases import pg_reachable, temporary_pg_database
from support.jobs import submit, wait_for
from support.server import ServerProcess, diskvault_command, with_tests_path

REDIS_URL = os.environ.get("DISKVAULT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _redis_ok() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_timeout=3).ping())
    except redis.RedisError:
        return False


pytestmark = pytest.mark.skipif(not _redis_ok(), reason=f"Redis not reachable at {REDIS_URL}")


class Cluster:
    def __init__(self, root: Path, db_url: str) -> None:
        self.root = root
        self.env = {
            "DISKVAULT_QUEUE_URL": REDIS_URL,
            "DISKVAULT_QUEUE_NAME": f"dvtest-{uuid.uuid4().hex[:8]}",
            "DISKVAULT_DATABASE_URL": db_url,
            "DISKVAULT_JOB_HEARTBEAT_S": "0.5",
            "DISKVAULT_JOB_HEARTBEAT_TIMEOUT_S": "3",
            "DISKVAULT_JOB_REAPER_INTERVAL_S": "1",
        }
        self.server = ServerProcess(
            root / "server", env={**self.env, "DISKVAULT_WORKERS": "0"}, demo_jobs=True
        )
        self.workers: dict[str, subprocess.Popen[bytes]] = {}

    def start_worker(self, node: str) -> None:
        data = self.root / node
        data.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env, "DISKVAULT_DATA_DIR": str(data), "DISKVAULT_WORKERS": "2"}
        command = diskvault_command("worker", "--node", node, demo_jobs=True)
        log = open(data / "worker.log", "ab")  # noqa: SIM115 - the child owns it
        self.workers[node] = subprocess.Popen(
            command, env=with_tests_path(env), stdout=log, stderr=subprocess.STDOUT
        )

    def stop(self) -> None:
        for proc in self.workers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        self.server.stop()
        r = redis.Redis.from_url(REDIS_URL)
        for key in r.scan_iter(f"huey.*{self.env['DISKVAULT_QUEUE_NAME']}*"):
            r.delete(key)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("cluster")
    with ExitStack() as stack:
        if pg_reachable():
            db_url = stack.enter_context(temporary_pg_database())
        else:
            db_url = f"sqlite:///{root / 'shared.db'}"
        c = Cluster(root, db_url)
        c.server.start()
        c.start_worker("node-a")
        c.start_worker("node-b")
        try:
            yield c
        finally:
            c.stop()


@pytest.fixture(scope="module")
def client(cluster: Cluster) -> Iterator[httpx.Client]:
    with cluster.server.client(cluster.server.login()) as c:
        yield c


def test_jobs_spread_over_both_workers(client: httpx.Client) -> None:
    jobs = [submit(client, seconds=0.6, steps=2) for _ in range(10)]
    nodes = {wait_for(client, j["id"], {"succeeded"})["ran_on"] for j in jobs}
    assert nodes == {"node-a", "node-b"}


def test_node_bound_jobs_run_only_on_their_node(client: httpx.Client) -> None:
    jobs = [submit(client, seconds=0.2, steps=1, node="node-b") for _ in range(6)]
    done = [wait_for(client, j["id"], {"succeeded"}) for j in jobs]
    assert {j["ran_on"] for j in done} == {"node-b"}
    assert {j["node"] for j in done} == {"node-b"}


def test_sigkilled_worker_job_is_reaped_by_the_survivor(
    cluster: Cluster, client: httpx.Client
) -> None:
    job = submit(client, seconds=60, steps=60, node="node-a")
    wait_for(client, job["id"], {"running"})
    started = time.monotonic()
    cluster.workers["node-a"].send_signal(signal.SIGKILL)
    cluster.workers["node-a"].wait()
    dead = wait_for(client, job["id"], {"failed", "succeeded"}, timeout=30)
    assert dead["status"] == "failed" and "stopped responding" in dead["error"]
    print(f"reaped {time.monotonic() - started:.1f}s after SIGKILL (timeout 3s)")
    cluster.start_worker("node-a")  # leave the cluster whole for later tests


def test_sigterm_of_a_worker_hands_its_job_to_the_other(
    cluster: Cluster, client: httpx.Client
) -> None:
    job = submit(client, seconds=4, steps=8)
    running = wait_for(client, job["id"], {"running"})
    node = running["ran_on"]
    other = "node-b" if node == "node-a" else "node-a"
    cluster.workers[node].send_signal(signal.SIGTERM)
    assert cluster.workers[node].wait(30) == 0
    try:
        done = wait_for(client, job["id"], {"succeeded", "failed", "cancelled"}, timeout=60)
        assert done["status"] == "succeeded", done
        assert done["ran_on"] == other and done["attempts"] == 1
    finally:
        cluster.start_worker(node)  # leave the cluster whole for later tests
