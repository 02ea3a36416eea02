"""Run the real reference server (``rtbench serve``) as a subprocess for tests.

The server binds port 0 and prints its address on one stderr line; ``ServerProcess``
parses that line, so tests never guess a port. ``restart`` brings the server back
on the same port and the same store, which is what reconnecting clients expect
after a crash (``stop("kill")``) or a graceful drain (``stop("term")``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

LISTENING = re.compile(
    r"rtbench reference server listening on ws://(?P<host>[^ ]+):(?P<port>\d+)/ws "
    r"\(transport (?P<transport>\w+), store (?P<store>[^,]+), pid (?P<pid>\d+)\)"
)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    """Write a server config TOML file from ``{"limits": {"max_rooms": 3}, ...}``."""
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


class ServerProcess:
    """A reference server subprocess: url, http base, pid, stop(), restart()."""

    def __init__(
        self,
        workdir: Path,
        *,
        store: str | None = None,
        config: dict[str, dict[str, Any]] | None = None,
        transport: str = "picows",
        auth: tuple[str, ...] = ("--insecure-dev",),
        extra_args: tuple[str, ...] = (),
        start_timeout: float = 20.0,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.store = store or f"sqlite:///{self.workdir / 'server.db'}"
        self.transport = transport
        self.config_path = write_config(self.workdir / "server.toml", config) if config else None
        self.auth = auth
        self.extra_args = extra_args
        self.start_timeout = start_timeout
        self.port = 0
        self.host = "127.0.0.1"
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []  # everything the server wrote to stderr
        self._reader: threading.Thread | None = None

    # ---- addresses
    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws"

    @property
    def http(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self, port: int) -> list[str]:
        cmd = [sys.executable, "-c", "from rtbench.entry import run; run()", "serve"]
        cmd += ["--host", self.host, "--port", str(port), "--store", self.store]
        cmd += ["--transport", self.transport, *self.auth, *self.extra_args]
        if self.config_path is not None:
            cmd += ["--config", str(self.config_path)]
        return cmd

    # ---- lifecycle
    def start(self, port: int | None = None) -> ServerProcess:
        """Start (on ``port``, default 0) and wait for the listening line."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            self.command(self.port if port is None else port),
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        ready = threading.Event()
        proc = self.proc

        def read() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                self.lines.append(line.rstrip("\n"))
                match = LISTENING.search(line)
                if match:
                    self.port = int(match["port"])
                    ready.set()
            ready.set()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        if not ready.wait(self.start_timeout) or proc.poll() is not None:
            self.stop("kill")
            raise RuntimeError("reference server did not start:\n" + "\n".join(self.lines[-20:]))
        return self

    def stop(self, how: str = "term", timeout: float = 15.0) -> int | None:
        """Stop with SIGTERM (graceful drain) or SIGKILL; returns the exit code."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL if how == "kill" else signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._reader is not None:
            self._reader.join(5)
        self.proc = None
        return proc.returncode

    def restart(self, how: str = "term") -> ServerProcess:
        """Stop, then start again on the same port and the same store."""
        port = self.port
        self.stop(how)
        deadline = time.monotonic() + 10
        while True:
            try:
                return self.start(port)
            except RuntimeError:
                if time.monotonic() > deadline:  # the port may linger briefly after a kill
                    raise
                time.sleep(0.2)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # ---- HTTP
    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.http + path, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def health(self) -> tuple[int, dict[str, Any]]:
        status, body = self.get("/healthz")
        return status, json.loads(body)

    def into_the_load(self, messages: int, within: float = 60.0) -> None:
        """Return once this server has stored ``messages`` more messages than at the call:
        for a test that stops something mid-run, the moment sends are flowing. (A fixed
        sleep from the process start missed the sending on a loaded machine: start-up and
        the ramp took longer, and the stop landed before the first send.)"""
        name = "rtbench_server_messages_stored_total"
        target = self.metric(name) + messages
        deadline = time.monotonic() + within
        while self.metric(name) < target:
            assert time.monotonic() < deadline, f"{messages} messages were never stored"
            time.sleep(0.05)  # poll /metrics: the stop must land while sends flow

    def metric(self, name: str, labels: str = "") -> float:
        """One sample from /metrics, e.g. metric("rtbench_server_closes_total", 'code="1013"')."""
        _, body = self.get("/metrics")
        wanted = f"{name}{{{labels}}}" if labels else name
        for line in body.decode().splitlines():
            if line.startswith(wanted + " "):
                return float(line.split()[-1])
        return 0.0

    def __enter__(self) -> ServerProcess:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop("kill" if self.alive() else "term")
