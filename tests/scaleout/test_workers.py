"""``rtbench serve --workers N``: one port, one listening line, restarts, drain, and
machine-wide /metrics and /healthz; and the setups that are refused."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import psutil
import pytest

from tests.scaleout.polling import wait_for
from tests.scaleout.test_cluster import start_node, wait_seq
from tests.support import Client
from tests.support.server import LISTENING

pytestmark = [pytest.mark.redis, pytest.mark.postgres]
RTBENCH = [sys.executable, "-c", "from rtbench.entry import run; run()", "serve", "--port", "0"]


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RTBENCH, "--insecure-dev", *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--workers", "2", "--store", "memory"), "--workers 2 needs --broker redis://"),
        (("--broker", "redis://127.0.0.1:6379/0"), "--broker needs a shared store"),
        (("--broker", "http://x", "--store", "postgresql://u@h/db"), "must be a redis://"),
    ],
)
def test_unsafe_setups_are_refused_with_one_line(args: tuple[str, ...], says: str) -> None:
    done = serve(*args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], done.stderr


def test_an_unreachable_broker_or_store_is_one_line_not_one_per_worker(pg_dsn: str) -> None:
    done = serve("--workers", "3", "--store", pg_dsn, "--broker", "redis://127.0.0.1:1/0")
    assert done.returncode == 2
    assert done.stderr.count("cannot connect to broker redis://127.0.0.1:1/0") == 1, done.stderr
    bad_store = "postgresql://postgres@127.0.0.1:1/test"
    done = serve("--workers", "2", "--store", bad_store, "--broker", "redis://127.0.0.1:6379/0")
    assert done.returncode == 2 and done.stderr.count("cannot connect to postgresql://") == 1


def worker_of(client: Client) -> str:
    """The ``I/N`` a worker puts in ``welcome.server``."""
    assert client.welcome is not None
    return client.welcome["server"].rsplit("worker ", 1)[1].rstrip(")")


async def test_workers_share_one_port_and_answer_for_each_other(
    start_server, pg_dsn, redis_url, redis_prefix
) -> None:
    server = start_node(start_server, pg_dsn, redis_url, redis_prefix, workers=2)
    assert sum(1 for line in server.lines if LISTENING.search(line)) == 1
    status, health = server.health()
    assert status == 200, health  # serving from the listening line on

    # a worker's first snapshot (broker and store links up) lands within one publish period
    # or two of the listening line; until then the machine reads "degraded", not "ok"
    def machine_ok() -> dict | None:
        _, body = server.health()
        return body if body["status"] == "ok" else None

    health = wait_for(machine_ok, 3.0)
    assert [w["worker"] for w in health["workers"]] == [0, 1]
    pids = {w["pid"] for w in health["workers"]}
    assert len(pids) == 2 and server.pid not in pids  # the workers, not the supervisor
    clients = [await Client.connect(server.url, f"u{i}") for i in range(24)]
    by_worker: dict[str, list[Client]] = {}
    for client in clients:
        by_worker.setdefault(worker_of(client), []).append(client)
    assert set(by_worker) == {"0/2", "1/2"}  # the kernel spread them (1 in 2**23 it would not)
    for client in clients:
        await client.join("plaza")
    sender, listener = by_worker["0/2"][0], by_worker["1/2"][0]
    ack = await sender.send_message("plaza", "across", cid="x1")
    await wait_seq(listener, "plaza", ack["seq"])
    # any worker's /metrics and /healthz count every worker's sessions (within 0.5 s)
    wait_for(lambda: server.metric("rtbench_server_hellos_total") == 24)
    wait_for(lambda: server.health()[1]["connections"] == 24)
    assert server.metric("rtbench_server_worker_up", 'worker="1"') == 1
    for client in clients:
        await client.close()


async def test_a_dead_worker_is_restarted_and_its_clients_resume(
    start_server, pg_dsn, redis_url, redis_prefix
) -> None:
    server = start_node(start_server, pg_dsn, redis_url, redis_prefix, workers=2)
    clients = [await Client.connect(server.url, f"v{i}") for i in range(16)]
    for client in clients:
        await client.join("yard")
    hellos = wait_for(lambda: server.metric("rtbench_server_hellos_total") == 16 and 16)
    victim = next(w for w in server.health()[1]["workers"] if w["worker"] == 0)
    os.kill(victim["pid"], signal.SIGKILL)
    dropped = [c for c in clients if worker_of(c) == "0/2"]
    kept = [c for c in clients if worker_of(c) == "1/2"]
    for client in dropped:
        await client.closed()
    wait_for(lambda: any("worker 0 (pid" in line and "restarting" in line for line in server.lines))

    def back() -> bool:
        status, health = server.health()
        zero = health["workers"][0]
        return status == 200 and zero["status"] == "ok" and zero["pid"] != victim["pid"]

    wait_for(back)
    assert server.health()[1]["workers"][0]["restarts"] == 1
    assert server.metric("rtbench_server_hellos_total") >= hellos  # counters never go back
    sent = await kept[0].send_message("yard", "while you were gone", cid="w1")
    again = await Client.connect(server.url, "v0", resume={"yard": 0})
    joined = await again.wait_type("joined", room="yard")
    assert joined["resumed"] and joined["seq"] == sent["seq"]
    assert [m["body"] for m in again.received("message", room="yard")] == ["while you were gone"]
    for client in [*kept, again]:
        await client.close()


async def test_sigterm_drains_every_worker_with_1012(
    start_server, pg_dsn, redis_url, redis_prefix
) -> None:
    server = start_node(start_server, pg_dsn, redis_url, redis_prefix, workers=2)
    clients = [await Client.connect(server.url, f"w{i}") for i in range(12)]
    assert {worker_of(c) for c in clients} == {"0/2", "1/2"}
    pids = [w["pid"] for w in server.health()[1]["workers"]]
    assert server.stop("term") == 0
    codes = {await client.closed() for client in clients}
    assert codes == {1012}
    assert not any(psutil.pid_exists(pid) for pid in pids)


async def test_machine_wide_metrics_are_valid_prometheus(
    start_server, pg_dsn, redis_url, redis_prefix, promtool
) -> None:
    server = start_node(start_server, pg_dsn, redis_url, redis_prefix, workers=2)
    clients = [await Client.connect(server.url, f"m{i}") for i in range(8)]
    for client in clients:
        await client.join("metered")
    await clients[0].send_message("metered", "counted", cid="m1")
    wait_for(lambda: server.metric("rtbench_server_messages_stored_total") == 1)
    # its ack, timed by the worker that stored it, is in the machine-wide histogram (the
    # ack goes once Redis took the publish, a round trip after the commit counted above)
    wait_for(lambda: server.metric("rtbench_server_ack_seconds_count") == 1)
    status, body = server.get("/metrics")
    assert status == 200
    text = body.decode()
    for name in (
        'rtbench_server_worker_up{worker="0"} 1.0',
        'rtbench_server_worker_restarts_total{worker="1"} 0.0',
        "rtbench_server_store_commit_seconds_bucket",
        "rtbench_server_ack_seconds_count",
        "rtbench_server_gap_repairs_total",
    ):
        assert name in text, name
    check = await asyncio.to_thread(
        subprocess.run, [promtool, "check", "metrics"], input=body, capture_output=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr
    for client in clients:
        await client.close()


async def test_one_worker_healthz_has_the_same_workers_list(
    start_server, pg_dsn, redis_url, redis_prefix
) -> None:
    """Monitors read ``workers`` whatever the count: one process lists itself."""
    server = start_node(start_server, pg_dsn, redis_url, redis_prefix)
    async with await Client.connect(server.url, "solo"):
        status, health = server.health()
    assert status == 200 and health["broker"]["status"] == "ok"
    assert health["store"]["url"].startswith("postgresql://")
    [me] = health["workers"]
    assert me["worker"] == 0 and me["pid"] == server.pid and me["status"] == "ok"
    assert me["connections"] == 1 and me["store"] == "ok" and me["broker"] == "ok"
