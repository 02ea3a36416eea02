"""`rtbench monitor` watching third-party servers: a Socket.IO server and a JSON server.

The real monitor runs in-process against the real test servers; the servers' faults are
switched on and off while it runs, and the monitor must see the outage they cause.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from monitor.config import TargetConfig
from rtbench.exitcodes import ExitCode
from tests.monitor.conftest import healthz, monitor_config, poll, running
from tests.thirdparty.conftest import GENERIC_OPTIONS


def _target(url: str, protocol: str, **fields: object) -> TargetConfig:
    # third-party servers have no /healthz or /metrics of ours
    return TargetConfig(
        url=url, name=protocol, protocol=protocol, health_url="", metrics_url="", **fields
    )  # type: ignore[arg-type]


async def _good_probes(monitor, at_least: int) -> dict:  # type: ignore[no-untyped-def]
    async def enough() -> dict | None:
        _, doc = await healthz(monitor)
        t = doc["targets"][0]
        window = t["windows"][0]
        return t if window["good"] >= at_least and window["good"] == window["total"] else None

    return await poll(enough, 30, f"{at_least} good probe intervals")


async def test_socketio_target_up_then_losing_messages_then_up(sio_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # Engine.IO pings every 0.3 s: the held connection lives only if the monitor pongs
    server = sio_server("--ping-interval", "0.3", "--ping-timeout", "1.0")
    http_url = server.url.replace("ws://", "http://", 1)  # as Socket.IO users write it
    settings = monitor_config(_target(http_url, "socketio"), tmp_path / "m.db")
    async with running(settings) as monitor:
        t = await _good_probes(monitor, 3)
        kinds = {p["kind"]: p for p in t["probes"]}
        assert kinds["delivery"]["ok"] and kinds["connect"]["ok"]
        await asyncio.sleep(2.0)  # several ping intervals
        runtime = monitor.targets[0]
        assert runtime.held is not None and runtime.held.connected
        _, doc = await healthz(monitor)
        assert doc["targets"][0]["recovery"]["count"] == 0  # never dropped, never recovered

        await asyncio.to_thread(server.set_faults, drop_every=1)

        async def incident() -> dict | None:
            status, doc = await healthz(monitor)
            t = doc["targets"][0]
            return t if status == 503 and t["incidents"] else None

        t = await poll(incident, 20, "an incident while the server drops every message")
        assert t["incidents"][0]["cause"].startswith("delivery")
        assert {p["kind"]: p for p in t["probes"]}["connect"]["ok"]  # handshakes still fine

        await asyncio.to_thread(server.set_faults, drop_every=0)

        async def closed() -> dict | None:
            _, doc = await healthz(monitor)
            t = doc["targets"][0]
            return t if t["incidents"] and t["incidents"][0]["ended_at"] else None

        await poll(closed, 20, "the incident closed once messages flow again")
    assert server.stats()["dropped"] >= 2


async def test_generic_target_from_protocol_options(json_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = json_server()
    target = _target(server.url, "generic", protocol_options=GENERIC_OPTIONS)
    async with running(monitor_config(target, tmp_path / "m.db")) as monitor:
        t = await _good_probes(monitor, 3)
        assert {p["kind"]: p for p in t["probes"]}["delivery"]["ok"]
        assert monitor.targets[0].held is not None and monitor.targets[0].held.connected
    assert server.stats()["sends"] >= 3


def test_monitor_config_with_a_bad_template_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "monitor.toml"
    config.write_text(
        '[[target]]\nurl = "ws://127.0.0.1:9/"\nprotocol = "generic"\n'
        "[target.protocol_options]\n"
        'join = { action = "subscribe", channel = "{rom}" }\n'
    )
    done = subprocess.run(
        [sys.executable, "-c", "from rtbench.entry import run; run()", "monitor", "--config",
         str(config), "--db", str(tmp_path / "m.db"), "--listen", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == ExitCode.USAGE, done.stderr
    lines = done.stderr.strip().splitlines()
    assert (
        len(lines) == 1 and "protocol_options.join.channel: unknown placeholder {rom}" in lines[0]
    )
