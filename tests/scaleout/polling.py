"""Waiting with a deadline: tests poll for a condition instead of sleeping a fixed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


async def until(check: Callable[[], Any], within: float = 20.0, blocking: bool = False) -> Any:
    """Poll ``check`` until it returns something true (``blocking``: it does I/O; in a thread)."""
    deadline = time.monotonic() + within
    while True:
        value = await asyncio.to_thread(check) if blocking else check()
        if value:
            return value
        assert time.monotonic() < deadline, f"condition not met within {within} s"
        await asyncio.sleep(0.05)


def wait_for(check: Callable[[], Any], within: float = 20.0) -> Any:
    """``until`` for synchronous tests and checks."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"condition not met within {within} s"
        time.sleep(0.1)
