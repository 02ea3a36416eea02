"""Run a third-party test server (``sio_server``, ``json_server``) as a subprocess.

The server binds port 0 and prints ``listening on 127.0.0.1:PORT`` first; this class reads
that line, so no test guesses a port. ``stats()`` and ``set_faults()`` talk to its plain
HTTP endpoints; ``stop()`` ends only this process, by its PID.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(rb"listening on 127\.0\.0\.1:(\d+)")


class ServerProc:
    """One test server process: ``url``, ``http``, ``stats()``, ``set_faults()``, ``stop()``."""

    def __init__(self, module: str, *args: str) -> None:
        self.argv = [sys.executable, "-m", module, "--port", "0", *args]
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.log = tempfile.TemporaryFile()  # noqa: SIM115  (closed by stop())

    def start(self, timeout: float = 20.0) -> ServerProc:
        self.proc = subprocess.Popen(
            self.argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=self.log, start_new_session=True
        )
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        seen = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if select.select([fd], [], [], 0.05)[0]:
                seen += os.read(fd, 4096)
                found = LISTENING.search(seen)
                if found:
                    self.port = int(found.group(1))
                    return self
            if self.proc.poll() is not None:
                break
        self.stop()
        raise RuntimeError(f"{self.argv} did not start: {seen!r} {self.stderr()}")

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def _get(self, path: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as resp:
            return json.loads(resp.read())

    def stats(self) -> dict[str, Any]:
        return self._get("/stats")

    def set_faults(self, **faults: float) -> dict[str, Any]:
        return self._get(f"/faults?{urlencode(faults)}")

    def stderr(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-2000:]

    def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc is not None and proc.stdout is not None:
            proc.stdout.close()

    def close(self) -> None:
        self.stop()
        self.log.close()
