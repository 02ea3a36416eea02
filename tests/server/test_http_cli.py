"""/healthz, /metrics (checked by promtool), and `rtbench serve`'s usage errors."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import Client, ServerProcess

SERVE = [sys.executable, "-c", "from rtbench.entry import run; run()", "serve"]


async def test_healthz_reports_state(shared_server: ServerProcess) -> None:
    async with await Client.connect(shared_server.url, "healthy") as c:
        await c.join("h-room")
        status, health = shared_server.health()
    assert status == 200
    assert health["status"] == "ok" and health["pid"] == shared_server.pid
    assert health["connections"] >= 1 and health["rooms"] >= 1
    assert health["store"]["status"] == "ok" and health["store"]["url"].startswith("sqlite:///")
    assert health["rss_bytes"] > 1_000_000 and health["uptime_s"] > 0
    assert health["loop_lag_ms"] >= 0


async def test_metrics_are_valid_prometheus(shared_server: ServerProcess, promtool: str) -> None:
    async with await Client.connect(shared_server.url, "metered") as c:
        await c.join("m-room")
        await c.send_message("m-room", "counted", "c1")
        await c.request({"type": "nope"})
    status, body = shared_server.get("/metrics")
    assert status == 200
    text = body.decode()
    for name in (
        "rtbench_server_connections ",
        "rtbench_server_messages_in_total",
        "rtbench_server_fanout_deliveries_total",
        "rtbench_server_store_commit_seconds_bucket",
        "rtbench_server_store_batch_size_count",
        'rtbench_server_errors_total{code="unknown_type"}',
        "rtbench_server_loop_lag_seconds",
        "rtbench_server_queue_high_water_bytes",
        "rtbench_server_slow_consumers_total",
        "rtbench_server_handshakes_total",
    ):
        assert name in text, name
    assert shared_server.metric("rtbench_server_messages_stored_total") >= 1
    # the stored send was acked and its ack timed on the server (under a minute, surely)
    assert shared_server.metric("rtbench_server_ack_seconds_count") >= 1
    assert shared_server.metric("rtbench_server_ack_seconds_bucket", 'le="+Inf"') >= 1
    assert 0 < shared_server.metric("rtbench_server_ack_seconds_sum") < 60
    check = await asyncio.to_thread(
        subprocess.run, [promtool, "check", "metrics"], input=body, capture_output=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr


async def test_the_ack_is_split_into_its_stages(reference_server: ServerProcess) -> None:
    """Every stored send's ack is timed, and so are its waits: for the committer (per item)
    and for the loop after the commit (per batch); each item's wait is part of its ack."""
    sends = 20
    async with await Client.connect(reference_server.url, "staged") as c:
        await c.join("stage-room")
        for i in range(sends):  # one at a time: each its own batch
            await c.send_message("stage-room", f"m{i}", f"c{i}")
    m = reference_server.metric
    stored = m("rtbench_server_messages_stored_total")
    assert stored == sends
    assert m("rtbench_server_ack_seconds_count") == sends
    assert m("rtbench_server_store_wait_seconds_count") == sends
    # one per group commit, the join's room and membership included
    batches = m("rtbench_server_store_batch_size_count")
    assert m("rtbench_server_store_callback_seconds_count") == batches > sends
    waited = m("rtbench_server_store_wait_seconds_sum")
    assert 0 < waited < m("rtbench_server_ack_seconds_sum") < 60
    assert 0 <= m("rtbench_server_store_callback_seconds_sum") < 60
    # the edges under 20 ms that a 10 ms goal is judged by
    text = reference_server.get("/metrics")[1].decode()
    for edge in ("0.003", "0.0075", "0.015"):
        for name in ("ack", "store_wait", "store_callback"):
            assert f'rtbench_server_{name}_seconds_bucket{{le="{edge}"}}' in text, (name, edge)


def test_unknown_path_is_404(shared_server: ServerProcess) -> None:
    assert shared_server.get("/nope")[0] == 404


def _serve(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SERVE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    ("args", "config", "needle"),
    [
        ((), None, "--jwt-secret"),
        (("--insecure-dev", "--jwt-secret", "x"), None, "not both"),
        (("--insecure-dev", "--store", "mysql://x"), None, "unknown store"),
        (("--insecure-dev", "--transport", "tornado"), None, "picows or websockets"),
        (("--insecure-dev",), "[limits]\nmax_romos = 3\n", "max_romos"),
        (("--insecure-dev",), "[limits]\nmax_rooms = 'many'\n", "limits.max_rooms"),
        (("--insecure-dev",), "not toml [", "not valid TOML"),
        (("--insecure-dev", "--config", "/nonexistent/rt.toml"), None, "cannot read config"),
        (("--insecure-dev", "--no-such-flag"), None, "--no-such-flag"),
        (("--insecure-dev", "--workers", "0"), None, "--workers"),
        (("--insecure-dev", "--port", "70000"), None, "70000"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    tmp_path: Path, args: tuple[str, ...], config: str | None, needle: str
) -> None:
    if config is not None:
        (tmp_path / "bad.toml").write_text(config)
        args = (*args, "--config", str(tmp_path / "bad.toml"))
    result = _serve("--port", "0", *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if "UNSIGNED" not in line]
    assert len(lines) == 1 and needle in lines[0], result.stderr
    if config is not None and "toml" not in needle.lower():
        assert "bad.toml" in lines[0]


def test_python_m_reference_server_is_rtbench_serve(tmp_path: Path) -> None:
    """The lean entry (no typer import: the server's start is on the recovery clock)."""
    module = [sys.executable, "-m", "reference_server"]
    shown = subprocess.run([*module, "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and shown.stdout.startswith("Usage: rtbench serve")
    assert "--store" in shown.stdout and "--insecure-dev" in shown.stdout
    bad = subprocess.run([*module, "--port", "x"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    # `rtbench serve` reaches the server's own parser without loading typer (~115 ms)
    probe = (
        "import sys, reference_server.launch as launch\n"
        "launch.serve = lambda args: print('typer' in sys.modules) or 0\n"
        "sys.argv = ['rtbench', 'serve', '--insecure-dev']\n"
        "from rtbench.entry import run\n"
        "run()\n"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert loaded.returncode == 0 and loaded.stdout.strip() == "False", loaded.stderr


def test_port_in_use_exits_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _serve("--port", str(port), "--insecure-dev", "--store", "memory", cwd=tmp_path)
    assert result.returncode == 2
    assert "cannot listen" in result.stderr.splitlines()[-1]


def test_listening_line_and_default_store_in_current_dir(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, store="sqlite:///here.db").start()
    try:
        line = next(line for line in server.lines if "listening on" in line)
        assert f"ws://127.0.0.1:{server.port}/ws" in line and f"pid {server.pid}" in line
        assert "transport picows" in line and "store sqlite:///here.db" in line
        assert (tmp_path / "here.db").exists()
        assert json.loads(server.get("/healthz")[1])["status"] == "ok"
    finally:
        assert server.stop("term") == 0


@pytest.mark.parametrize("transport", ["picows", "websockets"])
async def test_the_root_path_upgrades_like_ws(start_server, transport: str) -> None:  # type: ignore[no-untyped-def]
    """``ws://host:port/`` (a target typed with a trailing slash) is the same endpoint as
    ``/ws`` on both transports (docs/PROTOCOL.md, Transport)."""
    server = start_server(transport=transport, store="memory")
    root = f"ws://{server.host}:{server.port}/"
    async with (
        await Client.connect(root, "rooted") as c,
        await Client.connect(server.url, "walled") as d,
    ):
        await c.join("slash")
        await d.join("slash")
        sent = await d.send_message("slash", "through /ws", "s1")
        got = await c.wait(lambda f: f.get("type") == "message" and f.get("seq") == sent["seq"])
        assert got["body"] == "through /ws"
    assert server.get("/nope")[0] == 404  # other paths are still refused
