"""The server under test as rtbench's own child: start it, restart it, kill its workers.

``--server-cmd`` hands rtbench the command that starts the server, so a ``restart``
fault can stop it (SIGTERM: a graceful drain; SIGKILL: a crash) and start it again on
the same port, and ``kill-worker`` can SIGKILL one of its worker processes. Any server
works: rtbench only needs the command, and knows the server is up when its port
answers an HTTP request (any status: a WebSocket server speaks HTTP first). A port that
merely accepts TCP is not enough: a supervisor that binds before its workers start
(the reference server's ``--workers``) would look ready before anyone serves.
``{port}`` in the command is replaced by a free port that rtbench picks (and that the
default target then points at), so the port survives restarts without a fixed number
in the command.

The server runs in a process group of its own. SIGTERM goes to the server process
only (its own drain is the thing under test); SIGKILL, and the final clean-up, go to
that group, which only holds what rtbench started. Its output goes to a log file whose
last lines are shown when it will not start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import socket
import time
from pathlib import Path
from urllib.parse import urlparse

import psutil

from loadtest.faults.schedule import FaultRunError

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
POLL_S = 0.01


class ServerError(FaultRunError):
    """The server command cannot be run or will not come up; one line says why."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def prepare(server_cmd: str, target: str | None) -> tuple[str, str]:
    """Fill ``{port}`` in the command; the target defaults to ws://127.0.0.1:PORT."""
    if "{port}" in server_cmd:
        port = free_port()
        server_cmd = server_cmd.replace("{port}", str(port))
        if target is None:
            target = f"ws://127.0.0.1:{port}"
    if target is None:
        raise ServerError(
            "--server-cmd needs --target ws://HOST:PORT (or {port} in the command, which "
            "rtbench fills with a free port and targets)"
        )
    return server_cmd, target


def address_of(target: str) -> tuple[str, int]:
    """(host, port) of a ws(s):// URL (or http(s)://, as Socket.IO targets are named)."""
    url = urlparse(target)
    port = url.port or (443 if url.scheme in ("wss", "https") else 80)
    return url.hostname or "127.0.0.1", port


class ManagedServer:
    """One server command, run as a child in its own process group."""

    def __init__(self, command: str, target: str, log_path: Path) -> None:
        try:
            self.argv = shlex.split(command)
        except ValueError as exc:
            raise ServerError(f"--server-cmd cannot be parsed: {exc}") from None
        if not self.argv:
            raise ServerError("--server-cmd is empty")
        self.command = command
        self.host, self.port = address_of(target)
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    async def start(self) -> float:
        """Start and wait until the port accepts connections; returns seconds it took."""
        began = time.monotonic()
        # a few bytes to a local file, once per start: not worth a thread
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:  # noqa: ASYNC230
            log.write(f"--- start {self.starts + 1}: {self.command}\n".encode())
            try:
                self.proc = await asyncio.create_subprocess_exec(
                    *self.argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            except OSError as exc:
                raise ServerError(f"--server-cmd cannot start: {exc.strerror or exc}") from None
        self.starts += 1
        await self._wait_listening()
        return time.monotonic() - began

    async def _wait_listening(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if self.proc is not None and self.proc.returncode is not None:
                raise ServerError(
                    f"the server exited with code {self.proc.returncode} before listening on "
                    f"{self.host}:{self.port}: {self._tail()}"
                )
            if await _answers(self.host, self.port):
                return
            if time.monotonic() > deadline:
                raise ServerError(
                    f"the server did not listen on {self.host}:{self.port} within "
                    f"{READY_TIMEOUT_S:.0f} s: {self._tail()}"
                )
            await asyncio.sleep(POLL_S)

    def _tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no output)"
        return " | ".join(lines[-3:]) or "(no output)"

    async def stop(self, how: str = "term") -> float:
        """SIGTERM (graceful) or SIGKILL; returns seconds until the process had exited."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return 0.0
        began = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            if how == "kill":
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        self._reap_group(proc.pid)
        return time.monotonic() - began

    def _reap_group(self, pgid: int) -> None:
        """Anything left in the server's own process group (its workers) goes too."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)

    async def restart(self, how: str) -> dict[str, float]:
        """Stop, start again with the same command; the phases' durations in seconds."""
        stopped = await self.stop(how)
        up = await self.start()
        return {"stop_s": round(stopped, 3), "start_s": round(up, 3)}

    async def wait_workers(self, within_s: float = READY_TIMEOUT_S) -> list[int]:
        """The server's worker PIDs, waiting until it has started some (or ``within_s``)."""
        deadline = time.monotonic() + within_s
        # another process's children: nothing to wait on but their appearance
        while not (found := self.workers()) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        return found

    def workers(self) -> list[int]:
        """PIDs of the server's child processes (its workers), oldest first."""
        if self.proc is None or self.proc.returncode is not None:
            return []
        try:
            children = psutil.Process(self.proc.pid).children(recursive=False)
        except psutil.Error:
            return []
        return [c.pid for c in sorted(children, key=lambda c: c.create_time())]

    def kill_workers(self, count: int, pick: list[int] | None = None) -> list[int]:
        """SIGKILL ``count`` of the server's workers; returns their PIDs."""
        pids = pick if pick is not None else self.workers()
        if not pids:
            raise ServerError(
                "kill-worker: the server has no worker processes (start it with several, "
                "e.g. rtbench serve --workers 2)"
            )
        killed = []
        for pid in pids[:count]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        return killed

    async def close(self) -> None:
        """End the server for good (graceful first, like an operator would)."""
        if self.proc is not None and self.proc.returncode is None:
            await self.stop("term")


_PROBE = b"GET / HTTP/1.1\r\nHost: rtbench\r\nConnection: close\r\n\r\n"


async def _answers(host: str, port: int) -> bool:
    """True when the port answers an HTTP request with anything at all."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(_PROBE)
        return bool(await asyncio.wait_for(reader.read(1), 1.0))
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def admin_get(host: str, port: int, target: str, token: str | None) -> tuple[int, bytes]:
    """One plain HTTP GET of ``target`` (an admin endpoint): (status, body).

    ``token`` goes in ``Authorization: Bearer``. Raises ServerError when nothing answers.
    """
    head = f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
    if token:
        head += f"Authorization: Bearer {token}\r\n"
    try:
        async with asyncio.timeout(5.0):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write((head + "\r\n").encode())
                answer = await reader.read(65536)
                while chunk := await reader.read(65536):
                    answer += chunk
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
    except (OSError, TimeoutError) as exc:
        raise ServerError(f"{target} on {host}:{port}: no answer ({exc or 'timeout'})") from None
    status_line, _, rest = answer.partition(b"\r\n")
    parts = status_line.split()
    if len(parts) < 2 or not parts[1].isdigit():
        raise ServerError(f"{target} on {host}:{port}: not an HTTP answer")
    _, _, body = rest.partition(b"\r\n\r\n")
    return int(parts[1]), body
