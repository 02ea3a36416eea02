"""The fault proxy as a fleet of processes on one port, commanded together.

One proxy process holds two sockets per relayed connection and relays on one core,
so for a run of N connections rtbench starts ``ceil(N / PAIRS_PER_PROCESS)`` of them
on one port (``SO_REUSEPORT``: the kernel spreads new connections), sends each command
to all and adds up their answers. Every process is rtbench's child, ended by its PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sys
from typing import Any

from loadtest.faults.proxy import PAIRS_PER_PROCESS
from loadtest.faults.schedule import FaultRunError

START_TIMEOUT_S = 10.0
ANSWER_TIMEOUT_S = 10.0


class ProxyError(FaultRunError):
    """The fault proxy could not start or stopped answering."""


class ProxyFleet:
    """``shards`` proxy processes in front of ``upstream``; ``port`` is where clients go."""

    def __init__(self, upstream: tuple[str, int], shards: int, seed: int | None = None) -> None:
        self.upstream = upstream
        self.shards = max(1, shards)
        self.seed = seed
        self.procs: list[asyncio.subprocess.Process] = []
        self.port = 0

    @staticmethod
    def shards_for(connections: int) -> int:
        return max(1, math.ceil(connections / PAIRS_PER_PROCESS))

    async def start(self) -> int:
        host, port = self.upstream
        try:
            for index in range(self.shards):
                argv = [sys.executable, "-m", "loadtest.faults.proxy"]
                argv += ["--upstream", f"{host}:{port}", "--listen", f"127.0.0.1:{self.port}"]
                if self.seed is not None:
                    argv += ["--seed", str(self.seed * 100 + index)]
                proc = await asyncio.create_subprocess_exec(
                    *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
                )
                self.procs.append(proc)
                ready = await self._read(proc, first=True)
                self.port = int(ready["ready"])
        except BaseException:
            await self.close()
            raise
        return self.port

    async def _read(self, proc: asyncio.subprocess.Process, first: bool = False) -> dict[str, Any]:
        assert proc.stdout is not None
        wait = START_TIMEOUT_S if first else ANSWER_TIMEOUT_S
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), wait)
        except TimeoutError:
            raise ProxyError(f"fault proxy (pid {proc.pid}) did not answer") from None
        if not line:
            raise ProxyError(f"fault proxy (pid {proc.pid}) exited")
        return json.loads(line)

    async def command(self, **command: Any) -> list[dict[str, Any]]:
        """Send one command to every shard at once; their answers, in shard order."""
        payload = (json.dumps(command) + "\n").encode()
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(payload)
        return list(await asyncio.gather(*(self._read(p) for p in self.procs)))

    async def cut(self, share: float) -> int:
        return sum(a.get("cut", 0) for a in await self.command(cut=share))

    async def blackhole(self, on: bool) -> int:
        return sum(a.get("blackhole", 0) for a in await self.command(blackhole=int(on)))

    async def stats(self) -> dict[str, Any]:
        total: dict[str, Any] = {"shards": len(self.procs)}
        for answer in await self.command(stats=1):
            for key, value in answer.get("stats", {}).items():
                if isinstance(value, bool):
                    total[key] = total.get(key, False) or value
                else:
                    total[key] = total.get(key, 0) + value
        return total

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    async def close(self) -> None:
        """Close stdin (the shard exits by itself), then kill any that lingers, by PID."""
        for proc in self.procs:
            if proc.stdin is not None and not proc.stdin.is_closing():
                proc.stdin.close()
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 3.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        self.procs.clear()
