"""The fault proxy against a real WebSocket server: relays, cuts with a reset, blackholes.

The proxy runs in this test's event loop (``FaultProxy``) and, for the fleet, as real
child processes on one port (``ProxyFleet``), exactly as ``rtbench run`` starts them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosedError, InvalidHandshake

from loadtest.faults.fleet import ProxyFleet
from loadtest.faults.proxy import FaultProxy


async def _echo(ws: ServerConnection) -> None:
    try:
        async for message in ws:
            await ws.send(message)
    except ConnectionClosedError:
        pass


@pytest.fixture
async def echo_server() -> AsyncIterator[Server]:
    async with serve(_echo, "127.0.0.1", 0) as server:
        yield server


def _port(server: Server) -> int:
    return server.sockets[0].getsockname()[1]  # type: ignore[index]


async def _clients(port: int, n: int) -> list[ClientConnection]:
    return [
        await connect(f"ws://127.0.0.1:{port}", ping_interval=None, close_timeout=0.5)
        for _ in range(n)
    ]


async def _alive(ws: ClientConnection) -> bool:
    try:
        await ws.send("ping")
        return await asyncio.wait_for(ws.recv(), 2.0) == "ping"
    except (ConnectionClosedError, TimeoutError):
        return False


async def test_relays_cuts_a_share_with_a_reset_and_keeps_the_rest(echo_server: Server) -> None:
    proxy = FaultProxy("127.0.0.1", _port(echo_server), seed=1)
    port = await proxy.start()
    try:
        clients = await _clients(port, 20)
        assert all([await _alive(ws) for ws in clients])
        assert proxy.cut(0.25) == 5
        alive = [await _alive(ws) for ws in clients]
        assert alive.count(False) == 5 and proxy.stats()["open"] == 15
        dead = [ws for ws, ok in zip(clients, alive, strict=True) if not ok]
        # a reset, not a close handshake: the client saw no close frame
        assert all(ws.close_code == 1006 for ws in dead)
        for ws in clients:
            await ws.close()
    finally:
        await proxy.close()


async def test_blackhole_holds_bytes_and_closes_nothing(echo_server: Server) -> None:
    proxy = FaultProxy("127.0.0.1", _port(echo_server))
    port = await proxy.start()
    try:
        (ws,) = await _clients(port, 1)
        assert proxy.blackhole(True) == 1
        await ws.send("held")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.5)
        late = asyncio.ensure_future(connect(f"ws://127.0.0.1:{port}", ping_interval=None))
        await asyncio.sleep(0.3)
        assert not late.done()  # a new connection's upgrade is held too
        proxy.blackhole(False)
        assert await asyncio.wait_for(ws.recv(), 2.0) == "held"  # nothing was lost
        other = await asyncio.wait_for(late, 2.0)
        assert await _alive(other)
        await ws.close()
        await other.close()
    finally:
        await proxy.close()


async def test_a_dead_upstream_is_a_reset_for_the_client() -> None:
    proxy = FaultProxy("127.0.0.1", 1)  # nothing listens on port 1
    port = await proxy.start()
    try:
        with pytest.raises(InvalidHandshake):  # the connection was reset before any answer
            await connect(f"ws://127.0.0.1:{port}", open_timeout=2)
        assert proxy.stats()["upstream_failures"] == 1
    finally:
        await proxy.close()


async def test_fleet_shards_share_one_port_and_obey_together(echo_server: Server) -> None:
    fleet = ProxyFleet(("127.0.0.1", _port(echo_server)), shards=2, seed=3)
    port = await fleet.start()
    try:
        assert len(set(fleet.pids())) == 2
        clients = await _clients(port, 40)
        stats = await fleet.stats()
        assert stats["open"] == 40 and stats["shards"] == 2
        assert await fleet.cut(1.0) == 40
        assert not any([await _alive(ws) for ws in clients])
        for ws in clients:
            await ws.close()
    finally:
        await fleet.close()
    assert all(p.returncode is not None for p in fleet.procs) or not fleet.procs
