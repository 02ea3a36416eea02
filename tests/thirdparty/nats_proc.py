"""A nats-server of the test's own, with a WebSocket listener, as a subprocess.

nats-server is installed on these machines (and by ``.ci/run``); each test starts its own
on ports the server picks (``-1``), read back from its log, with a config file holding the
``websocket`` block, the ping settings a test needs and, optionally, a token. ``varz()``
reads the server's own counters from its monitoring port: the truth a run is compared
with. ``stop()`` ends only this process, by its PID.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tests.conftest import need_service

WS_LINE = re.compile(r"Listening for websocket clients on ws://127\.0\.0\.1:(\d+)")
HTTP_LINE = re.compile(r"Starting http monitor on 127\.0\.0\.1:(\d+)")


class NatsServer:
    """One nats-server: ``url`` (its WebSocket listener), ``varz()``, ``stop()``."""

    def __init__(self, ping_interval: str = "2m", ping_max: int = 2, token: str = "") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="rtbench-nats-"))
        lines = [
            'listen: "127.0.0.1:-1"',
            'http: "127.0.0.1:-1"',
            f'ping_interval: "{ping_interval}"',
            f"ping_max: {ping_max}",
            "websocket {",
            '  listen: "127.0.0.1:-1"',
            "  no_tls: true",
            "}",
        ]
        if token:
            lines += ["authorization {", f'  token: "{token}"', "}"]
        (self.dir / "nats.conf").write_text("\n".join(lines) + "\n")
        self.log = self.dir / "nats.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.http_port = 0

    def start(self, timeout: float = 20.0) -> NatsServer:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                ["nats-server", "-c", str(self.dir / "nats.conf")],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")
            ws, http = WS_LINE.search(text), HTTP_LINE.search(text)
            if ws and http and "Server is ready" in text:
                self.port, self.http_port = int(ws.group(1)), int(http.group(1))
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)  # the log is a file: poll it, within the deadline
        self.stop()
        raise RuntimeError(f"nats-server did not start: {self.log.read_text(errors='replace')}")

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def varz(self) -> dict[str, Any]:
        """The server's own counters (in_msgs, out_msgs, connections, ...)."""
        url = f"http://127.0.0.1:{self.http_port}/varz"
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.loads(resp.read())

    def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


def nats_servers() -> Iterator[Callable[..., NatsServer]]:
    """A fixture body: a factory of nats-servers, each stopped at the end of the test."""
    need_service(
        "nats-server",
        shutil.which("nats-server") is not None,
        "Debian: apt-get install nats-server",
    )
    servers: list[NatsServer] = []

    def start(**settings: Any) -> NatsServer:
        server = NatsServer(**settings).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
