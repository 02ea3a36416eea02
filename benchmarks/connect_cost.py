"""Generator CPU per WebSocket connect: picows over aiofastnet vs uvloop's own transport.

The load engine opens every connection through one call (``Worker.dial``: the ramp and
every reconnect after a fault), so its cost per connect bounds how fast a generator core
can bring thousands of clients back (reports/recovery.md). picows uses aiofastnet when
it is installed; this measures both against the Node ``ws`` echo peer (which answers
handshakes faster than any Python server, so the client is the limit), alternating:
``--connects`` handshakes per round, 256 in flight, then all closed.

    .venv/bin/python -m benchmarks.connect_cost              # 3,000 connects, 4 rounds each
    .venv/bin/python -m benchmarks.connect_cost --connects 5000 --rounds 6

Prints the client's CPU (user + system) per connect per transport, medians and every
round, and JSON last. Node is pinned to one core and this process to the other; the
machine lock is held throughout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys

import uvloop
from picows import WSListener, ws_connect

from benchmarks.lock import exclusive_machine
from benchmarks.procs import Cores, NodePeer

IN_FLIGHT = 256


async def connect_round(url: str, connects: int, aiofastnet: bool) -> float:
    """Open ``connects`` WebSockets (bounded in flight), close them; CPU us per connect."""
    gate = asyncio.Semaphore(IN_FLIGHT)
    opened = []

    async def one() -> None:
        async with gate:
            transport, _ = await ws_connect(
                WSListener, url, use_aiofastnet=aiofastnet, max_redirects=0
            )
            opened.append(transport)

    before = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.gather(*(one() for _ in range(connects)))
    after = resource.getrusage(resource.RUSAGE_SELF)
    for transport in opened:
        transport.disconnect(graceful=False)
    await asyncio.sleep(0.3)  # let the closes settle before the next round
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return used / connects * 1e6


async def measure(url: str, connects: int, rounds: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {"aiofastnet": [], "uvloop": []}
    for _ in range(rounds):
        for name in results:
            results[name].append(await connect_round(url, connects, name == "aiofastnet"))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connects", type=int, default=3000, help="connects per round")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per transport")
    args = parser.parse_args(argv)
    cores = Cores.detect()
    with exclusive_machine("connect cost"), NodePeer(cores, "echo.js") as peer:
        if cores.client is not None:
            os.sched_setaffinity(0, {cores.client})
        results = uvloop.run(measure(peer.url, args.connects, args.rounds))
    summary = {}
    for name, values in results.items():
        median = statistics.median(values)
        summary[name] = {"median_us": round(median, 1), "rounds_us": [round(v) for v in values]}
        rounds = ", ".join(f"{v:.0f}" for v in values)
        print(f"{name}: {median:.0f} us of client CPU per connect (rounds: {rounds})")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
