"""RabbitMQ's MQTT and STOMP over WebSocket plugins, as the MQTT and STOMP tests find them.

The broker is a machine service (SERVICES.md), not started per test: ``.ci/run`` starts
RabbitMQ when it is down and enables ``rabbitmq_web_mqtt`` (15675) and
``rabbitmq_web_stomp`` (15674). Tests find the endpoints through
``RTBENCH_TEST_MQTT_URL`` / ``RTBENCH_TEST_STOMP_URL`` and are skipped when they are not
reachable, except under ``RTBENCH_REQUIRE_SERVICES=1``, where that fails them. Every run
names its rooms (topics, destinations) after a fresh run tag, so tests never see each
other's messages.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import websockets

from loadtest.adapters.mqtt import connect_packet
from rtbench.slo import SLO, LatencyTarget, RecoveryTarget
from tests.conftest import _reachable, need_service

MQTT_URL = os.environ.get("RTBENCH_TEST_MQTT_URL", "ws://127.0.0.1:15675/ws")
STOMP_URL = os.environ.get("RTBENCH_TEST_STOMP_URL", "ws://127.0.0.1:15674/ws")
HOW = (
    "RabbitMQ with rabbitmq_web_mqtt / rabbitmq_web_stomp enabled; .ci/run does it "
    "(SERVICES.md), or set RTBENCH_TEST_MQTT_URL / RTBENCH_TEST_STOMP_URL"
)


LENIENT = SLO(
    delivery_latency=LatencyTarget(threshold_ms=30_000),
    recovery=RecoveryTarget(threshold_ms=30_000),
)
"""Thresholds these tests do not judge, set out of the way. The broker is a shared machine
service on a 2-core box other runs keep busy: a neighbour's stall (a 2.8 s reconnect of
40 clients was seen once, at a load average near 5) would fail a latency or recovery
verdict that these tests are not about. They assert the delivery accounting, the acks
and the recovery counts exactly instead."""
LENIENT_TOML = (
    "[delivery_latency]\npercentile = 99\nthreshold_ms = 30000\n"
    "[recovery]\npercentile = 99\nthreshold_ms = 30000\n"
)


def lenient_slo(folder: Path) -> str:
    """``LENIENT`` as an SLO file, for the ``rtbench`` commands the tests run."""
    path = folder / "lenient-slo.toml"
    path.write_text(LENIENT_TOML)
    return str(path)


def _up(url: str) -> bool:
    return _reachable(url.replace("ws://", "http://", 1), urlparse(url).port or 80)


@pytest.fixture(scope="session")
def mqtt_url() -> str:
    need_service("RabbitMQ Web MQTT", _up(MQTT_URL), f"{MQTT_URL}: {HOW}")
    return MQTT_URL


@pytest.fixture(scope="session")
def stomp_url() -> str:
    need_service("RabbitMQ Web STOMP", _up(STOMP_URL), f"{STOMP_URL}: {HOW}")
    return STOMP_URL


@pytest.fixture
def client_prefix() -> Iterator[str]:
    """A client-id prefix unique to the test; persistent MQTT sessions opened under it
    are ended afterwards (a clean-session CONNECT with the same id), or the broker would
    keep their queues forever."""
    prefix = f"t{secrets.token_hex(3)}-"
    yield prefix
    asyncio.run(end_sessions(MQTT_URL, prefix))


@pytest.fixture
def new_sessions_ended() -> Iterator[None]:
    """Persistent MQTT sessions the test opens (whatever their client ids) are ended after
    it; for a test that cannot choose its client ids (a documented example as written)."""
    before = set(_session_ids(""))
    yield
    for client_id in set(_session_ids("")) - before:
        asyncio.run(end_sessions(MQTT_URL, client_id))


def _session_ids(prefix: str) -> list[str]:
    """Client ids of the broker's persistent MQTT sessions whose id starts with ``prefix``
    (RabbitMQ keeps each in a queue ``mqtt-subscription-<client id>qos<N>``)."""
    try:
        done = subprocess.run(
            ["rabbitmqctl", "list_queues", "-q", "--no-table-headers", "name"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    head = f"mqtt-subscription-{prefix}"
    ids = set()
    for name in done.stdout.split():
        if name.startswith(head) and name[-4:-1] == "qos":
            ids.add(name[len("mqtt-subscription-") : -4])
    return sorted(ids)


async def end_sessions(url: str, prefix: str) -> None:
    """End the persistent sessions of ``prefix`` (a clean-session connect ends one)."""
    for client_id in await asyncio.to_thread(_session_ids, prefix):
        try:
            async with websockets.connect(url, subprotocols=["mqtt"]) as ws:  # type: ignore[list-item]
                await ws.send(connect_packet(4, client_id, 10, clean=True))
                await asyncio.wait_for(ws.recv(), 5)
        except (OSError, TimeoutError, websockets.WebSocketException):
            pass


def rtbench(*args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    """The ``rtbench`` command in a subprocess (its exit code and stderr are the subject)."""
    command = [sys.executable, "-c", "from rtbench.entry import run; run()", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def results_of(out: Path) -> Any:
    from rtbench.results import read_results

    return read_results(out / "results.json")


def doc_example(heading: str) -> tuple[str, str]:
    """The TOML file and the command of a worked example in docs/ADAPTERS.md."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "ADAPTERS.md").read_text()
    start = text.index(heading)
    end = text.find("\n## ", start)
    section = text[start : end if end > 0 else None]
    toml = re.search(r"```toml\n(.*?)```", section, re.S)
    command = re.search(r"```sh\n(.*?)```", section, re.S)
    assert toml is not None and command is not None
    return toml.group(1), command.group(1).strip()


def run_documented(command: str, name: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """A documented ``rtbench run FILE ...`` command, in ``cwd`` (quietly, and judged by
    ``LENIENT``: the example's figures, not this machine's neighbours, are the subject)."""
    args = shlex.split(command)
    assert args[:3] == ["rtbench", "run", name], args
    slo = ["--slo", lenient_slo(cwd)]
    return subprocess.run(
        [sys.executable, "-c", "from rtbench.entry import run; run()", *args[1:], "-q", *slo],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
