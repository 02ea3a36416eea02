"""The public entry of a load run: a resolved scenario in, a merged ``Outcome`` out.

``run_scenario`` is what ``rtbench run``, ``rtbench check``, the benchmarks and the tests
call. It decides what surrounds the load (a ``FaultSession`` when the scenario has
faults or a ``--server-cmd``; an observer beside it) and hands the load itself to the
native engine (``loadtest.engine.coordinator.run_load``). It is the one place in the run
core that starts a driver (tests/test_layers.py holds it to that); a Locust run starts
from Locust's own runner instead (``loadtest.locust.control``) and shares the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loadtest.export import Exporters
    from loadtest.faults.runner import FaultSession
    from loadtest.run.outcome import Outcome, Progress
    from loadtest.scenarios import Scenario


async def run_scenario(
    scenario: Scenario,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    ontime_ms: float = 100.0,
    log_dir: Path | None = None,
    observe: Callable[[FaultSession], Coroutine[Any, Any, None]] | None = None,
    exporters: Exporters | None = None,
) -> Outcome:
    """Run a resolved scenario; with faults or a server command, inside a ``FaultSession``.

    ``ontime_ms`` (the delivery target) decides which deliveries count in the message
    flow; the server's output goes to ``log_dir/server.log`` (a temporary folder when
    None). ``observe(session)`` runs beside the load (the check's uptime prober, a
    benchmark sampling the server's CPU) and is cancelled when it ends. ``exporters``
    get the live figures (``loadtest.export``).
    """
    from loadtest.engine.coordinator import run_load
    from loadtest.faults.runner import FaultSession
    from loadtest.faults.schedule import parse_faults

    if not scenario.faults and not scenario.server_cmd:
        return await run_load(scenario, on_progress=on_progress, exporters=exporters)
    assert scenario.target is not None  # a resolved scenario has one (ScenarioError otherwise)
    faults = parse_faults(
        scenario.faults, duration_s=scenario.duration, server_cmd=scenario.server_cmd
    )
    session = FaultSession(
        faults,
        target=scenario.target,
        connections=scenario.connections,
        server_cmd=scenario.server_cmd,
        log_dir=log_dir or Path(tempfile.mkdtemp(prefix="rtbench-faults-")),
        seed=scenario.seed,
        ontime_ms=ontime_ms,
    )
    async with session:
        watcher = asyncio.get_running_loop().create_task(observe(session)) if observe else None
        try:
            return await run_load(
                scenario, on_progress=on_progress, faults=session, exporters=exporters
            )
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
