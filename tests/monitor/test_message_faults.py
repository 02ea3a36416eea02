"""Message-level probes catch what a handshake check cannot: a server that accepts
connections but loses messages is down, and a slow one fails the latency target.

The targets are the load engine's tiny reference-protocol servers with deliberate faults
(tests/loadtest/tiny_servers.py), on loopback port 0.
"""

from __future__ import annotations

import pytest

from monitor.config import TargetConfig
from tests.loadtest.tiny_servers import Faults, TinyReferenceServer
from tests.monitor.conftest import healthz, monitor_config, poll, running


@pytest.fixture
def tiny(request):
    server = TinyReferenceServer(request.param).start()
    yield server
    server.stop()


def _target(server: TinyReferenceServer) -> TargetConfig:
    # the tiny server has no /healthz or /metrics, and no resume: probes only
    return TargetConfig(
        url=f"{server.url}/ws", name="tiny", health_url="", metrics_url="", held_connection=False
    )


@pytest.mark.parametrize("tiny", [Faults(drop_every=1)], indirect=True)
async def test_a_server_that_loses_every_message_is_down(tiny, tmp_path):
    async with running(monitor_config(_target(tiny), tmp_path / "m.db")) as monitor:

        async def incident():
            status, doc = await healthz(monitor)
            t = doc["targets"][0]
            return status == 503 and t["incidents"] and t

        t = await poll(incident, 15, "an incident on a server that drops messages")
    kinds = {p["kind"]: p for p in t["probes"]}
    assert kinds["connect"]["ok"] is True  # the handshake alone looks fine
    assert kinds["delivery"]["ok"] is False
    assert t["incidents"][0]["cause"] == "delivery: no answer within 0.5s"
    assert t["windows"][0]["good"] == 0
    assert tiny.stats.dropped >= 2


@pytest.mark.parametrize("tiny", [Faults(delay_ms=150.0)], indirect=True)
async def test_a_slow_server_fails_latency_but_not_uptime(tiny, tmp_path):
    async with running(monitor_config(_target(tiny), tmp_path / "m.db")) as monitor:

        async def measured():
            status, doc = await healthz(monitor)
            t = doc["targets"][0]
            return t["latency"]["count"] >= 3 and (status, t)

        status, t = await poll(measured, 20, "three delivery probes")
    verdicts = {v["target"]: v for v in t["verdicts"]}
    assert status == 503
    assert verdicts["uptime"]["status"] == "pass"
    assert verdicts["delivery_latency"]["status"] == "fail"
    # the server holds every delivery 150 ms: the probe sees at least that, and not much more
    assert 150.0 <= t["latency"]["p50"] < 250.0
    assert 150.0 <= verdicts["delivery_latency"]["measured"] < 400.0
