"""Admission in buckets: the server's token bucket on accepted upgrades, and its clients.

The bucket itself is arithmetic (checked exactly with a given clock); the refusal is
checked on a real server (both transports: HTTP 503 with Retry-After, before any
socket); and a real reconnect storm through the engine shows clients backing off and
all coming back. ``--admit-rate`` is off by default: nothing changes for anyone else.
"""

from __future__ import annotations

import pytest
import websockets

from loadtest.client import waits_for_listener
from reference_server.config import ServerConfig
from reference_server.limits import Admission
from tests.recovery.conftest import serve_cmd
from tests.recovery.test_faults import _lossless_and_measured
from tests.support import Client


def test_the_bucket_admits_its_burst_then_its_rate() -> None:
    bucket = Admission.from_config(10.0, 3, now=100.0)
    assert bucket is not None
    assert [bucket.admit(100.0) for _ in range(3)] == [0.0, 0.0, 0.0]  # the burst
    assert bucket.admit(100.0) == pytest.approx(0.1)  # empty: a token in 1 / 10 s
    assert bucket.admit(100.05) == pytest.approx(0.05)  # half refilled
    assert bucket.admit(100.1) == 0.0  # one token: one upgrade
    assert bucket.admit(100.1) > 0
    assert bucket.admit(200.0) == 0.0 and bucket.tokens == pytest.approx(2.0)  # capped
    assert Admission.from_config(0, 5, now=0.0) is None  # off
    default_burst = Admission.from_config(50.0, 0, now=0.0)
    assert default_burst is not None and default_burst.burst == 50.0  # one second's worth
    slow = Admission.from_config(0.5, 0, now=0.0)  # one every 2 s: a burst of 1
    assert slow is not None and slow.admit(0.0) == 0.0 and slow.admit(0.0) == 2.0


def test_off_by_default_and_a_503_takes_the_backoff_ladder() -> None:
    limits = ServerConfig().limits
    assert limits.admit_rate == 0.0 and limits.admit_burst == 0
    assert waits_for_listener("refused")  # nothing listens: wait for the port
    for cause in ("http_503", "timeout", "reset", "closed_1013"):
        assert not waits_for_listener(cause)


@pytest.mark.parametrize("transport", ["picows", "websockets"])
async def test_past_the_bucket_an_upgrade_gets_503_with_retry_after(
    start_server, transport: str
) -> None:
    # 3 upgrades at once, then one every 100 s: the fourth in a row is refused (however
    # slowly this machine connects the first three)
    server = start_server(
        store="memory",
        transport=transport,
        extra_args=("--admit-rate", "0.01", "--admit-burst", "3"),
    )
    clients = [await Client.connect(server.url, f"a{i}") for i in range(3)]
    with pytest.raises(websockets.InvalidStatus) as refused:
        await Client.connect(server.url, "a3")
    response = refused.value.response
    assert response.status_code == 503
    retry_after = int(response.headers["Retry-After"])  # whole seconds until a token
    assert 1 <= retry_after <= 100
    assert b"try again later" in response.body
    assert server.metric("rtbench_server_admission_refused_total") == 1
    assert server.metric("rtbench_server_connections") == 3  # no socket for the refused one
    # /healthz and /metrics are not upgrades: never refused
    assert server.metric("rtbench_server_connections_opened_total") == 3
    for c in clients:
        await c.close()


@pytest.mark.slow
def test_a_storm_past_the_bucket_backs_off_and_every_client_comes_back(fault_run, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # 200 clients ramp at 50 a second (under the bucket's 60 a second, burst 50); then the
    # server asks all of them to reconnect at once: 50 get in on the burst, and unless
    # the other 150 took 2.5 s to try, some are refused 503 and come back on their
    # backoff ladder as the bucket refills
    cmd = serve_cmd(
        "--store", f"sqlite:///{tmp_path / 'server.db'}", "--admit-rate", "60",
        "--admit-burst", "50",
    )  # fmt: skip
    results = fault_run(["drain:200/0ms@3s"], server_cmd=cmd, ramp=4.0)
    fault = _lossless_and_measured(results, 200)
    assert fault["causes"] == {"close_1012": 200}
    assert fault["attempts_per_loss"] > 1  # refused attempts were retried
    assert any("http_503" in note for note in results.generator.notes), results.generator.notes
